#!/usr/bin/env bash
# THE test command: `sudo scripts/test.sh [pytest args]` (default: tests -q).
# Prepares the machine (scripts/setup.sh), then runs pytest in .venv against a real dockerd and nginx.
# Exits with pytest's status (5, "no tests collected", is a failure too).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh" || exit $?
cd "$ROOT" || exit 1
if [ "$#" -eq 0 ]; then
    set -- tests -q
fi
exec "$ROOT/.venv/bin/python" -m pytest "$@"
