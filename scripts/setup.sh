#!/usr/bin/env bash
# Prepare this machine for the bluegreen-controller tests (idempotent; run as root on Debian/Ubuntu):
#   - Debian packages: docker.io nginx-light busybox-static apache2-utils prometheus
#     prometheus-alertmanager docker-compose docker-registry wrk prometheus-node-exporter prometheus-nginx-exporter (installed only when missing;
#     their services are not started: the tests run private instances on free loopback ports)
#   - a running dockerd (started in the background when `docker info` fails: no systemd here)
#   - .venv with the project installed editable with its [test] extra (skipped when up to date)
# Environment: PYTHON (default python3), BLUEGREEN_DOCKERD_ARGS (extra dockerd flags),
#              BLUEGREEN_DOCKERD_TIMEOUT (seconds, default 60), BLUEGREEN_SKIP_APT=1 (no package step).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PACKAGES=(docker.io nginx-light busybox-static apache2-utils prometheus prometheus-alertmanager
          docker-compose docker-registry wrk prometheus-node-exporter
          prometheus-nginx-exporter)
DOCKERD_LOG=/var/log/bluegreen-dockerd.log
DOCKERD_TIMEOUT="${BLUEGREEN_DOCKERD_TIMEOUT:-60}"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
STAMP="$VENV/.bluegreen-setup-stamp"

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" -eq 0 ]; }

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
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# temporary, from bluegreen scripts/setup.sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && made_policy=1
    fi
    local rc=0
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/tmp/bluegreen-apt.log 2>&1 \
        && apt-get install -y -qq --no-install-recommends \
               -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
               "${missing[@]}" >>/tmp/bluegreen-apt.log 2>&1 || rc=$?
    [ "$made_policy" -eq 1 ] && rm -f "$policy"
    [ "$rc" -eq 0 ] || { tail -n 20 /tmp/bluegreen-apt.log >&2; die "apt-get install failed (exit $rc; log /tmp/bluegreen-apt.log)"; }
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
    if [ ! -x "$VENV/bin/python" ]; then
        say "venv: creating $VENV with $("$PYTHON" -V 2>&1)"
        "$PYTHON" -m venv "$VENV" >/tmp/bluegreen-venv.log 2>&1 || {
            cat /tmp/bluegreen-venv.log >&2
            die "python -m venv failed (on Debian: apt-get install python3-venv)"
        }
    fi
    say "venv: pip install -e '.[test]'"
    if ! ( cd "$ROOT" && "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]' ) \
            >/tmp/bluegreen-pip.log 2>&1; then
        tail -n 25 /tmp/bluegreen-pip.log >&2
        die "pip install -e '.[test]' failed (log /tmp/bluegreen-pip.log)"
    fi
    printf '%s\n' "$want" > "$STAMP"
    say "venv: ready"
}

if [ "${BLUEGREEN_SKIP_APT:-0}" != 1 ]; then install_packages; fi
start_dockerd
setup_venv
