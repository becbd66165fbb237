#!/usr/bin/env bash
# THE test command: `sudo scripts/test.sh [pytest args]` (default: the static gates, then tests -q).
# Prepares the machine (scripts/setup.sh), then, for the full run (no arguments), the static gates
# (scripts/gates.sh: mypy --strict, ruff, import contracts), then pytest in .venv against a real dockerd and nginx.
# With pytest arguments only pytest runs. Exits with pytest's status (5, "no tests collected", is a failure
# too), or 1 when pytest passed but a gate failed: the suite still runs after a failed gate, so CI shows both.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh" || exit $?
cd "$ROOT" || exit 1
gates=0
if [ "$#" -eq 0 ]; then
    "$ROOT/scripts/gates.sh" || gates=$?
    # Two workers: most tests wait on real containers and nginx, not on the CPU, so two processes roughly halve
    # the wall time on a 2-core machine. Whole files go to one worker (loadfile), so a module's costly fixture
    # (every bad-input CLI run, a registry, a monitoring stack) is set up once. BLUEGREEN_TEST_WORKERS=0 runs
    # everything in one process.
    set -- tests -q -n "${BLUEGREEN_TEST_WORKERS:-2}" --dist loadfile --durations=20
fi
"$ROOT/.venv/bin/python" -m pytest "$@"
code=$?
if [ "$code" -eq 0 ] && [ "$gates" -ne 0 ]; then
    echo "test.sh: the tests passed but a static gate failed (see 'gates:' above)" >&2
    code=1
fi
exit "$code"
