"""Crash safety on a real dockerd and a real nginx.

Issue 2, item 8: kill -9 of `reconcile --once` at chosen instants of a real deploy. A deploy of
a slow image (healthy some seconds after start) to green is killed when the world or the run's log shows a
given instant; the next `--once` must complete it. Meanwhile a bounded background loop asks nginx's public port for
/actuator/health: every answer must be 200 UP from v1 or from a slow container that is UP, i.e. nginx
never routed a request to a container that had not passed its health check, and never dropped one.

Issue 10, item 1: crash-looping containers (restart policy unless-stopped) get no traffic, however often
they answer UP, and a restart by Docker costs an idle color its standing; item 10: a container under our
name that the controller did not create is left alone.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.support.controller_run import (
    Run,
    Traffic,
    World,
    condition,
    get,
    history,
    json_lines,
    read,
    start_reconcile,
)
from tests.support.images import crashloop_image, pin_images, slow_image
from tests.support.nginx import NginxInstance
from tests.support.wait import kill_9_when, wait_while_running

pytestmark = [pytest.mark.docker, pytest.mark.nginx]



def _health_down(w: World, color: str) -> bool:
    try:
        return get(f"http://127.0.0.1:{w.ports[color]}/actuator/health", timeout=0.5).status_code == 503
    except Exception:
        return False


# Early instants (just created, starting) are also hit by the spread test below.
INSTANTS = ["health-wait", "include-written", "reloaded-before-marker"]


def _half_a_second_after(predicate: Callable[[], bool]) -> Callable[[], bool]:
    """True from half a second after `predicate` first held (the controller is then inside its health wait)."""
    first: list[float] = []

    def held() -> bool:
        if not first and predicate():
            first.append(time.monotonic())
        return bool(first) and time.monotonic() - first[0] >= 0.5

    return held


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
        if instant == "health-wait":
            kill_9_when(_half_a_second_after(lambda: _health_down(w, "green")), proc, 30, "green running and not healthy yet")
        elif instant == "include-written":
            kill_9_when(test_flag.exists, proc, 30, "testCommand started")
            assert f":{w.ports['green']};" in (read(w.include) or "")  # written before the test; nothing wrote since
        else:
            kill_9_when(reload_flag.exists, proc, 30, "reload sent")

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


SLOW_SECONDS = 12  # the deploy's new color answers UP this long after its start: every kill below lands before


def test_repeated_kill_9_at_spread_instants_never_routes_to_an_unhealthy_container(
    docker_client: Any, test_images: dict[str, str], app_name: str, nginx: NginxInstance, tmp_path: Path, session_id: str
) -> None:
    """Runs killed one after another, each at a later step of the deploy it finds; then one that finishes.

    Each kill is placed by the run's own progress (its lock, its log), not by the clock: every instant is
    reached while the run still has the new color's health wait ahead, so every kill lands, however loaded the host.
    """
    image = slow_image(docker_client, SLOW_SECONDS)
    pin_images(docker_client, [image], {"bluegreen.test": session_id})  # no other test's pruning removes it meanwhile
    w = World(docker_client, app_name, nginx, tmp_path, session_id)
    w.once()
    w.set(image=image, activeColor="green", healthCheck={"timeoutSeconds": 4 * SLOW_SECONDS})
    lock = w.state / "lock"

    def acting(verb: str | None, phase: str) -> Callable[[Path, subprocess.Popen[str]], bool]:
        return lambda log, _p: any(
            e.get("event") == f"action.{phase}" and (verb is None or (e.get("action"), e.get("color")) == (verb, "green")) for e in json_lines(read(log) or "")
        )

    instants: list[tuple[str, Callable[[Path, subprocess.Popen[str]], bool]]] = [
        ("lock taken, nothing done yet", lambda _log, p: (read(lock) or "").strip() == str(p.pid)),
        ("first step begun (the green container's creation)", acting(None, "start")),
        ("first step done", acting(None, "done")),
        ("waiting for green's health check", acting("WaitHealthy", "start")),
        ("waiting again, green older", acting("WaitHealthy", "start")),
    ]
    with Traffic(nginx.public_url_for(app_name) + "/actuator/health", interval=0.05, max_seconds=180) as traffic:
        for n, (instant, reached) in enumerate(instants):
            log = tmp_path / f"run{n}.log"
            proc = start_reconcile(w.spec_path, w.state, "--once", "--log-format", "json", stderr_path=log)
            try:
                wait_while_running(partial(reached, log, proc), proc, 60, instant)
                proc.send_signal(signal.SIGKILL)
                assert proc.wait(timeout=10) == -signal.SIGKILL, f"run {n} finished before its kill at: {instant}"
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)
            assert w.served() == "v1", f"after the kill at: {instant}"  # green never passed: traffic stays on v1
        w.once("--lock-timeout", "1")
        w.assert_converged_on("green", "slow")
    not_ok = [a for a in traffic.answers if a.status != 200 or a.version not in ("v1", "slow") or '"UP"' not in a.body]
    assert not_ok == [], f"{len(not_ok)} bad answers, first: {not_ok[:3]}"
    assert {a.version for a in traffic.answers} == {"v1", "slow"}


# ------------------------------------------------------------------------------------ crash loops (issue 10)

CRASHLOOP_SECONDS = 3  # each run of the crash-looping image answers UP for this long, then exits
STABLE = 5  # the stability window: longer than one run, so a crash loop can never pass it


def _restarts(w: World, color: str) -> int:
    c = w.container(color)
    return int(c.attrs["RestartCount"]) if c is not None else -1


def _up(w: World, color: str) -> bool:
    try:
        return get(f"http://127.0.0.1:{w.ports[color]}/actuator/health", timeout=0.5).status_code == 200
    except Exception:
        return False


def _fresh_run_answering_up(w: World, color: str, timeout: float = 60, before: int | None = None) -> int:
    """Wait for Docker to restart `color` again and for the new run to answer UP; its restart count.

    `before`: the count read before whatever made it exit (Docker may restart it before this is called)."""
    before = _restarts(w, color) if before is None else before
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = _restarts(w, color)
        if count > before and _up(w, color):
            return count
        time.sleep(0.05)
    raise AssertionError(f"{color} was not restarted and UP again within {timeout:g}s (restarts: {before})")


def _memory(w: World) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((w.state / "apps" / w.app / "memory.json").read_text())
    return data


def _actions(r: Run) -> list[tuple[str, str, float]]:
    """(action, color, seconds) of each action this run finished, from its JSON log lines."""
    return [(e["action"], e["color"], float(e["seconds"])) for e in r.logs() if e.get("event") == "action.done"]


def test_crash_looping_color_answering_up_after_the_backoff_gets_no_traffic(
    docker_client: Any, test_images: dict[str, str], app_name: str, nginx: NginxInstance, tmp_path: Path, session_id: str
) -> None:
    """The issue's scenario: a failed deploy, its backoff ends, and the next run meets the crash-looping
    container right after a restart, answering UP. One probe must not be enough: the run waits out a full
    window, sees the restart, fails, and keeps the failure memory; traffic never leaves v1."""
    image = crashloop_image(docker_client, CRASHLOOP_SECONDS)
    pin_images(docker_client, [image], {"bluegreen.test": session_id})  # no other test's pruning removes it meanwhile
    w = World(docker_client, app_name, nginx, tmp_path, session_id, restartPolicy="unless-stopped",
              healthCheck={"stableSeconds": STABLE, "timeoutSeconds": 15})
    w.once()
    w.set(image=image, activeColor="green")
    first = w.once("--backoff-base", "1", expect=1)
    assert any(f"{app_name}-green" in m for m in first.messages()), first.explain()
    w.assert_serving("blue", "v1")
    [failure] = _memory(w)["failures"].values()
    assert failure["count"] == 1

    time.sleep(1.2)  # the backoff (1 s) is over
    with Traffic(nginx.public_url_for(app_name) + "/actuator/health", interval=0.05, max_seconds=60) as traffic:
        restarts = _fresh_run_answering_up(w, "green")
        r = w.once("--backoff-base", "1", expect=1)
    assert restarts >= 1
    assert r.elapsed < STABLE + 15, r.explain()
    assert any(f"{app_name}-green" in m for m in r.messages()), r.explain()
    # It waited on the container it found (no switch on one probe), and the wait failed.
    assert ("WaitHealthy", "green") not in [(a, c) for a, c, _ in _actions(r)], r.explain()
    assert [row["outcome"] for row in history(w.state, app_name) if row["action"] == "WaitHealthy" and row["color"] == "green"][-1] == "failed"
    w.assert_serving("blue", "v1")
    assert all(row["color"] == "blue" for row in history(w.state, app_name) if row["action"] == "SwitchRoute")
    # The failure memory is kept (and counts this run); the app is Degraded, not converged.
    [failure] = _memory(w)["failures"].values()
    assert failure["count"] == 2, failure
    assert condition(w.status(), "Degraded")["status"] == "True"
    answers = traffic.answers
    assert answers and all(a.status == 200 and a.version == "v1" for a in answers), [a for a in answers if a.version != "v1"][:3]


def test_rollback_is_a_switch_onto_a_steady_color_and_waits_a_window_for_one_docker_restarted(
    docker_client: Any, test_images: dict[str, str], app_name: str, nginx: NginxInstance, tmp_path: Path, session_id: str
) -> None:
    w = World(docker_client, app_name, nginx, tmp_path, session_id, restartPolicy="unless-stopped", healthCheck={"stableSeconds": 2})
    w.once()
    w.set(image="bgtest:v2", activeColor="green")
    w.once()
    w.assert_serving("green", "v2")

    # Docker restarts idle blue's app (its main process exited; restart policy): restart count 1, just started.
    blue_id = w.container("blue").id
    before = _restarts(w, "blue")
    w.container("blue").exec_run(["kill", "-TERM", "1"])
    assert _fresh_run_answering_up(w, "blue", timeout=30, before=before) == 1
    w.set(image="bgtest:v1", activeColor="blue")
    r = w.once()
    done = _actions(r)
    verbs = [(a, c) for a, c, _ in done]
    assert ("WaitHealthy", "blue") in verbs and verbs.index(("WaitHealthy", "blue")) < verbs.index(("SwitchRoute", "blue")), r.explain()
    assert next(s for a, c, s in done if a == "WaitHealthy") >= 2, r.explain()  # a full window, not one probe
    w.assert_converged_on("blue", "v1")
    assert w.container("blue").id == blue_id  # proven again, not recreated

    # Green has run since its deploy without a restart, longer than the window: rolling onto it is a switch.
    assert _restarts(w, "green") == 0
    w.set(image="bgtest:v2", activeColor="green")
    r = w.once()
    done = _actions(r)
    assert [a for a, _, _ in done] == ["SwitchRoute", "WriteMarker"], r.explain()
    assert sum(s for _, _, s in done) < 1.0, r.explain()
    w.assert_converged_on("green", "v2")


def test_rollback_refuses_a_standby_docker_restarted(
    docker_client: Any, test_images: dict[str, str], app_name: str, nginx: NginxInstance, tmp_path: Path, session_id: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 19 #11: `reconcile rollback` accepts only a warm standby. One Docker restarted (its main process
    exited; restart policy) passes its check again, yet is refused: exit 2, one line, the file untouched."""
    from controller.cli.main import main

    w = World(docker_client, app_name, nginx, tmp_path, session_id, restartPolicy="unless-stopped", healthCheck={"stableSeconds": 1})
    w.once()
    w.set(image="bgtest:v2", activeColor="green")
    w.once()
    w.assert_serving("green", "v2")
    before = _restarts(w, "blue")
    w.container("blue").exec_run(["kill", "-TERM", "1"])
    assert _fresh_run_answering_up(w, "blue", timeout=30, before=before) == 1
    text = w.spec_path.read_text()
    capsys.readouterr()
    assert main(["rollback", "-f", str(w.spec_path), "--state-dir", str(w.state)]) == 2
    out, errs = capsys.readouterr()
    assert out == "" and len(errs.splitlines()) == 1, (out, errs)
    assert f"refused: no warm standby to roll back to: {app_name}-blue " in errs and "restart" in errs, errs
    assert w.spec_path.read_text() == text
    w.assert_serving("green", "v2")


def test_container_with_our_name_but_not_our_labels_is_left_alone(
    docker_client: Any,
    test_images: dict[str, str],
    app_name: str,
    nginx: NginxInstance,
    tmp_path: Path,
    session_id: str,
    run_container: Callable[..., Any],
) -> None:
    """Issue 10 item 10: someone's `docker run --name <app>-green` is not drift to force-remove."""
    w = World(docker_client, app_name, nginx, tmp_path, session_id)
    w.set(activeColor="green")
    # Only the test session's label (for cleanup): none of the controller's labels.
    foreign = run_container(test_images["v2"], name=f"{app_name}-green", host_port=w.ports["green"])
    foreign.wait_ready()
    assert "bluegreen.app" not in foreign.container.labels

    r = w.once(expect=1)
    assert any("ForeignContainer" in m and f"{app_name}-green" in m for m in r.messages()), r.explain()
    green = w.container("green")
    assert green is not None and green.id == foreign.id and green.status == "running"
    assert w.served() is None and w.routed() is None  # never routed to: nginx still has only its placeholder
    assert f":{w.ports['green']};" not in (read(w.include) or "")
    assert not [row for row in history(w.state, app_name) if row["color"] == "green"]

    # The other color is still managed: deploying to blue works; the stranger stays, and stays reported.
    w.set(activeColor="blue")
    r = w.once(expect=1)
    assert any("ForeignContainer" in m for m in r.messages()), r.explain()
    w.assert_serving("blue", "v1")
    assert w.container("green").id == foreign.id
    code, plan = w.plan_json()
    assert code == 1 and [b["reason"] for b in plan["blockers"]] == ["ForeignContainer"] and plan["actions"] == [], plan
