#!/usr/bin/env bash
# Prepare this machine for the bluegreen-controller tests (idempotent; run as root on Debian/Ubuntu):
#   - Debian packages: docker.io nginx-light busybox-static apache2-utils prometheus
#     prometheus-alertmanager docker-compose docker-registry wrk prometheus-node-exporter prometheus-nginx-exporter
#     git openssh-client (the git source's tests: git http-backend, ssh-keygen signatures) redis-server (accessory tests: its binaries go into a test image FROM scratch) (installed only when missing;
#     their services are not started: the tests run private instances on free loopback ports)
#   - a running dockerd (started in the background when `docker info` fails: no systemd here)
#   - .venv with the project installed editable with its [test] extra (skipped when up to date)
# Environment: PYTHON (default python3), BLUEGREEN_DOCKERD_ARGS (extra dockerd flags),
#              BLUEGREEN_DOCKERD_TIMEOUT (seconds, default 60), BLUEGREEN_SKIP_APT=1 (no package step).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PACKAGES=(docker.io nginx-light busybox-static apache2-utils prometheus prometheus-alertmanager
          docker-compose docker-registry wrk prometheus-node-exporter
          prometheus-nginx-exporter git openssh-client redis-server)
DOCKERD_LOG=/var/log/bluegreen-dockerd.log
DOCKERD_TIMEOUT="${BLUEGREEN_DOCKERD_TIMEOUT:-60}"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
STAMP="$VENV/.bluegreen-setup-stamp"

POLICY_RC=/usr/sbin/policy-rc.d
MADE_POLICY=""    # set only while this run's own policy-rc.d exists: the only one we ever remove

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" -eq 0 ]; }
# A private log file (mktemp: new name, mode 0600, never follows a planted /tmp symlink as root).
new_log() { mktemp "${TMPDIR:-/tmp}/bluegreen-$1.XXXXXXXX" || die "cannot create a log file for $1 in ${TMPDIR:-/tmp}"; }

remove_policy() {
    if [ -n "$MADE_POLICY" ]; then
        rm -f "$MADE_POLICY"
        MADE_POLICY=""
    fi
}
# Interrupted (Ctrl-C, CI cancel, a failure) or not: never leave our policy-rc.d behind, since it would
# keep every later package's service from starting on this machine.
on_exit() { remove_policy; }
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# ------------------------------------------------------------------ packages
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }

install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
    if [ "${#missing[@]}" -eq 0 ]; then
        say "packages: all present"
        return 0
    fi
    is_root || die "packages missing (${missing[*]}): run as root (sudo scripts/test.sh)"
    command -v apt-get >/dev/null || die "packages missing (${missing[*]}) and no apt-get: not Debian/Ubuntu?"
    say "packages: installing ${missing[*]}"
    # Keep the packages' maintainer scripts from starting nginx/prometheus/registry services
    # (they would take ports 80/9090/5000); dockerd is started below, our way.
    # noclobber: an existing policy-rc.d (the admin's) is never replaced, so never removed either.
    if [ ! -e "$POLICY_RC" ] \
        && (set -C; printf '#!/bin/sh\n# temporary, from bluegreen scripts/setup.sh\nexit 101\n' > "$POLICY_RC") 2>/dev/null; then
        MADE_POLICY=$POLICY_RC
        chmod 755 "$POLICY_RC"
    fi
    local rc=0 log
    log="$(new_log apt)" || exit 1
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >"$log" 2>&1 \
        && apt-get install -y -qq --no-install-recommends \
               -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
               "${missing[@]}" >>"$log" 2>&1 || rc=$?
    remove_policy
    [ "$rc" -eq 0 ] || { tail -n 20 "$log" >&2; die "apt-get install failed (exit $rc; log $log)"; }
    rm -f "$log"
    # Belt and braces, where an init system did start them anyway.
    local svc
    for svc in nginx prometheus prometheus-alertmanager prometheus-node-exporter prometheus-nginx-exporter docker-registry; do
        if command -v systemctl >/dev/null && [ "$(ps -p 1 -o comm= 2>/dev/null)" = systemd ]; then
            systemctl disable --now "$svc" >/dev/null 2>&1 || true
        elif command -v service >/dev/null; then
            service "$svc" stop >/dev/null 2>&1 || true
        fi
    done
    say "packages: installed"
}

# ------------------------------------------------------------------ dockerd
docker_ok() { timeout 10 docker info >/dev/null 2>&1; }

start_dockerd() {
    command -v docker >/dev/null || die "no docker CLI (package docker.io)"
    if docker_ok; then
        say "dockerd: running"
        return 0
    fi
    is_root || die "dockerd is not answering and starting it needs root (sudo scripts/test.sh)"
    command -v dockerd >/dev/null || die "no dockerd binary (package docker.io)"
    local pid=""
    if pgrep -x dockerd >/dev/null; then
        say "dockerd: process exists but does not answer yet; waiting"
    else
        say "dockerd: starting (log $DOCKERD_LOG)"
        # shellcheck disable=SC2086 # BLUEGREEN_DOCKERD_ARGS is a list of flags
        setsid nohup dockerd ${BLUEGREEN_DOCKERD_ARGS:-} >>"$DOCKERD_LOG" 2>&1 </dev/null &
        pid=$!
    fi
    local deadline=$((SECONDS + DOCKERD_TIMEOUT))
    until docker_ok; do
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            tail -n 15 "$DOCKERD_LOG" >&2
            die "dockerd exited at start (see $DOCKERD_LOG)"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 15 "$DOCKERD_LOG" >&2
            die "dockerd did not answer within ${DOCKERD_TIMEOUT}s (see $DOCKERD_LOG)"
        fi
        sleep 0.5
    done
    say "dockerd: ready"
}

# ------------------------------------------------------------------ virtualenv
setup_venv() {
    command -v "$PYTHON" >/dev/null || die "$PYTHON not found (need Python >= 3.10; set PYTHON=...)"
    "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
        || die "$PYTHON is $("$PYTHON" -V 2>&1): Python >= 3.10 is required (set PYTHON=...)"
    local want
    want="$(cat "$ROOT/pyproject.toml" <("$PYTHON" -VV) | sha256sum | cut -d' ' -f1)"
    if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
        say "venv: up to date ($VENV)"
        return 0
    fi
    local log
    if [ ! -x "$VENV/bin/python" ]; then
        say "venv: creating $VENV with $("$PYTHON" -V 2>&1)"
        log="$(new_log venv)" || exit 1
        "$PYTHON" -m venv "$VENV" >"$log" 2>&1 || {
            cat "$log" >&2
            die "python -m venv failed (on Debian: apt-get install python3-venv; log $log)"
        }
        rm -f "$log"
    fi
    say "venv: pip install -e '.[test]'"
    log="$(new_log pip)" || exit 1
    if ! ( cd "$ROOT" && "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]' ) \
            >"$log" 2>&1; then
        tail -n 25 "$log" >&2
        die "pip install -e '.[test]' failed (log $log)"
    fi
    rm -f "$log"
    printf '%s\n' "$want" > "$STAMP"
    say "venv: ready"
}

main() {
    if [ "${BLUEGREEN_SKIP_APT:-0}" != 1 ]; then install_packages; fi
    start_dockerd
    setup_venv
}

# Sourced (tests/test_setup_script.py runs single functions in a sandbox): define, do not run.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then main; fi
