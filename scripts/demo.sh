#!/usr/bin/env bash
# Set up this machine (scripts/setup.sh), then show the controller deploy a demo app blue v1 -> green v2
# behind a private nginx on 127.0.0.1 next to a Redis accessory the app dependsOn (created and healthy before
# the app starts; stopped, it holds a new color back while the live one serves, and the next pass heals it),
# and print their status. Cleans up everything it started (also the demo's own Redis volume).
#
#   sudo scripts/demo.sh
#
# Needs root the first time (apt-get install docker.io nginx busybox-static, start dockerd); afterwards any
# user that can talk to dockerd. BLUEGREEN_DEMO_SKIP_SETUP=1 skips scripts/setup.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
APP=bgdemo

if [ "${BLUEGREEN_DEMO_SKIP_SETUP:-0}" != 1 ]; then
    "$ROOT/scripts/setup.sh"
fi
PY="$ROOT/.venv/bin/python"
[ -x "$PY" ] || PY="${PYTHON:-python3}"

# Backstop for scripts/demo.py's own cleanup (it removes all of this itself, also on Ctrl-C): whatever
# happens to it, no demo container and no demo nginx outlive this script.
WORKFILE=$(mktemp /tmp/bluegreen-demo-run.XXXXXX)
export BLUEGREEN_DEMO_WORKFILE="$WORKFILE"
cleanup() {
    local ids work pid
    ids=$(docker ps -aq --filter "label=bluegreen.app=$APP" 2>/dev/null || true)
    [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
    ids=$(docker ps -aq --filter "label=bluegreen.accessory=$APP-redis" 2>/dev/null || true)
    [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
    docker network rm "$APP-net" >/dev/null 2>&1 || true
    docker volume rm "$APP-redis-data" >/dev/null 2>&1 || true
    work=$(cat "$WORKFILE" 2>/dev/null || true)
    if [ -n "$work" ] && [ -f "$work/nginx/pid" ]; then
        pid=$(cat "$work/nginx/pid" 2>/dev/null || true)
        # Only this run's nginx master: its command line names this run's directory.
        if [ -n "$pid" ] && grep -qs "$work" "/proc/$pid/cmdline"; then kill -TERM "$pid" 2>/dev/null || true; fi
    fi
    [ -z "$work" ] || rm -rf "$work"
    rm -f "$WORKFILE"
}
trap cleanup EXIT

cd "$ROOT"
# In the background so that a signal to this script reaches demo.py at once (it cleans up, then exits).
"$PY" "$ROOT/scripts/demo.py" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 130' INT TERM
wait "$child"
