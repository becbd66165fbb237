#!/usr/bin/env bash
# The static gates CI enforces: `mypy --strict` on controller/ and tests/ (pyproject [tool.mypy]),
# `ruff check controller tests bench`, and the import contracts (`lint-imports`, pyproject [tool.importlinter]).
# scripts/test.sh runs them before the whole suite; alone: `scripts/gates.sh` (no root, no dockerd). About 5 s
# with a warm mypy cache; without one, mypy takes longer (113 s measured on 2 cores under load average 10).
# Runs every gate, then exits 1 if any failed. Environment: VENV (default .venv beside this repo).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${VENV:-$ROOT/.venv}/bin"
# mypy's cache outside the checkout: CI checks out a fresh clone each time, and a cold mypy (it analyses pydantic,
# pytest, hypothesis, ... for the strict check) takes most of the gates' time. Entries are validated by content
# hash, so a cache made by another clone or venv path is reused safely.
export MYPY_CACHE_DIR="${MYPY_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/bluegreen-controller/mypy}"
cd "$ROOT" || exit 1
failed=()
gate() {
    printf 'gates: %s\n' "$*"
    "$@" || failed+=("$(basename "$1")")
}
gate "$BIN/mypy"
gate "$BIN/ruff" check controller tests bench
gate "$BIN/lint-imports" --no-cache
if [ "${#failed[@]}" -ne 0 ]; then
    printf 'gates: FAILED: %s\n' "${failed[*]}" >&2
    exit 1
fi
printf 'gates: all passed\n'
