"""Crash safety (issue 2, item 8): kill -9 of `reconcile --once` at chosen instants of a real deploy.

A deploy of bgtest:slow (healthy 3 s after start) to green is killed when the world shows a given
instant; the next `--once` must complete it. Meanwhile a bounded background loop asks nginx's public
port for /actuator/health: every answer must be 200 UP from v1 or from a slow container that is UP, i.e.
nginx never routed a request to a container that had not passed its health check, and never dropped one.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.controller_run import Traffic, World, get, read, start_reconcile
from tests.support.nginx import NginxInstance

pytestmark = [pytest.mark.docker, pytest.mark.nginx]


def _wait_for(predicate: Callable[[], object], proc: subprocess.Popen[str], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the controller exited ({proc.returncode}) before {what}")
        time.sleep(0.01)
    raise AssertionError(f"{what} did not happen within {timeout:g}s")


def _health_down(w: World, color: str) -> bool:
    try:
        return get(f"http://127.0.0.1:{w.ports[color]}/actuator/health", timeout=0.5).status_code == 503
    except Exception:
        return False


# Early instants (just created, starting) are also hit by the spread test below.
INSTANTS = ["health-wait", "include-written", "reloaded-before-marker"]


@pytest.mark.parametrize("instant", INSTANTS)
def test_kill_9_mid_deploy_then_next_once_completes(
    docker_client: Any,
    test_images: dict[str, str],
    app_name: str,
    nginx: NginxInstance,
    tmp_path: Path,
    session_id: str,
    instant: str,
) -> None:
    w = World(docker_client, app_name, nginx, tmp_path, session_id)
    w.once()
    w.assert_serving("blue", "v1")

    test_flag, reload_flag = tmp_path / "testing", tmp_path / "reloaded"
    nginx_cmd = {}
    if instant == "include-written":
        # Hold the controller inside testCommand, i.e. after the include is written and before the reload.
        nginx_cmd["testCommand"] = ["sh", "-c", f'touch {test_flag}; sleep 2; exec "$@"', "sh", *nginx.test_command]
    if instant == "reloaded-before-marker":
        # Hold it after nginx has been told to reload, before the route is confirmed and the marker written.
        nginx_cmd["reloadCommand"] = ["sh", "-c", f'"$@" && touch {reload_flag} && sleep 2', "sh", *nginx.reload_command]
    w.set(image="bgtest:slow", activeColor="green", nginx=nginx_cmd)

    with Traffic(nginx.public_url_for(app_name) + "/actuator/health", interval=0.05, max_seconds=90) as traffic:
        proc = start_reconcile(w.spec_path, w.state, "--once", stderr_path=tmp_path / "killed.log")
        try:
            if instant == "health-wait":
                _wait_for(lambda: _health_down(w, "green"), proc, 30, "green running and not healthy yet")
                time.sleep(0.5)
            elif instant == "include-written":
                _wait_for(test_flag.exists, proc, 30, "testCommand started")
                assert f":{w.ports['green']};" in (read(w.include) or "")
            else:
                _wait_for(reload_flag.exists, proc, 30, "reload sent")
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=10) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)

        # The world as the kill left it: traffic still served (by v1, or by slow only if it passed).
        killed_at = time.time()
        assert w.served() in ("v1", "slow")
        if instant == "health-wait":
            assert w.routed() == "blue" and read(w.marker) == "blue\n"
        if instant == "include-written":
            assert w.routed() == "blue"  # the include names green, but nginx was never reloaded
        if instant == "reloaded-before-marker":
            assert read(w.marker) == "blue\n"

        # The next run completes the deploy; no lock is left behind by the killed holder.
        r = w.once("--lock-timeout", "1")
        w.assert_serving("green", "slow")
        time.sleep(0.2)
    assert r.elapsed < 30, r.explain()

    answers = traffic.answers
    assert len(answers) > 50 and any(a.at > killed_at for a in answers)
    not_ok = [a for a in answers if a.status != 200 or a.version not in ("v1", "slow") or '"UP"' not in a.body]
    assert not_ok == [], f"{len(not_ok)} bad answers, first: {not_ok[:3]}"
    assert {a.version for a in answers} == {"v1", "slow"}
    seen = [a.version for a in answers]
    assert seen == sorted(seen, key=("v1", "slow").index), "traffic went back to v1 after reaching slow"
    green = w.container("green")
    assert green.labels["bluegreen.color"] == "green" and green.status == "running"


def test_repeated_kill_9_at_spread_instants_never_routes_to_an_unhealthy_container(
    docker_client: Any, test_images: dict[str, str], app_name: str, nginx: NginxInstance, tmp_path: Path, session_id: str
) -> None:
    """Runs killed one after another, each a little later after taking the lock; then one that finishes."""
    w = World(docker_client, app_name, nginx, tmp_path, session_id)
    w.once()
    w.set(image="bgtest:slow", activeColor="green")
    lock = w.state / "lock"
    killed = 0
    with Traffic(nginx.public_url_for(app_name) + "/actuator/health", interval=0.05, max_seconds=120) as traffic:
        for delay in (0.0, 0.15, 0.4, 0.8, 1.5, 2.5):
            proc = start_reconcile(w.spec_path, w.state, "--once")
            try:

                def lock_taken(p: subprocess.Popen[str] = proc) -> bool:
                    return (read(lock) or "").strip() == str(p.pid)

                _wait_for(lock_taken, proc, 30, "lock taken")
                time.sleep(delay)
                proc.send_signal(signal.SIGKILL)
                code = proc.wait(timeout=10)
                killed += code == -signal.SIGKILL
            except AssertionError:
                assert proc.poll() == 0  # finished before the kill: fine, it converged
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)
            assert w.served() in ("v1", "slow")
        w.once("--lock-timeout", "1")
        w.assert_converged_on("green", "slow")
    not_ok = [a for a in traffic.answers if a.status != 200 or a.version not in ("v1", "slow") or '"UP"' not in a.body]
    assert not_ok == [], f"{len(not_ok)} bad answers, first: {not_ok[:3]}"
    assert killed >= 4
