"""Post-switch verification on real parts (issue 11): real dockerd, the shipped nginx site writing its JSON-lines
access log, the controller as a subprocess (`--once`), bounded loopback traffic.

- a release whose health says UP while `/` answers 500 for every second request: traffic is back on the previous
  color inside the window, the failed requests are bounded, the revision is not retried, status/plan say why;
- a healthy release: the window closes, nothing moves, and `standby: stop` acts only after it;
- `--watch` runs a window in the app's own worker: another app cuts over meanwhile, SIGTERM leaves the window to resume;
- a release whose health starts failing a few seconds after the switch, with the run killed -9 inside the window
  before that: the next run resumes the same window (counts kept) and switches back.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.world.verification import FAILED_REASON
from tests.support.containers import LABEL_TEST, remove_containers
from tests.support.controller_run import Traffic, World, condition, history, run_reconcile, start_reconcile
from tests.support.nginx import NginxInstance
from tests.support.shipped_site import start_shipped
from tests.support.verify_images import verify_image
from tests.support.wait import wait_until
from tests.test_watch import WatchProcess

APPS = {name: f"vf{name}{uuid.uuid4().hex[:6]}" for name in ("bad", "sick", "good", "wa", "wb")}
AUTH = {"ops": "pw"}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[NginxInstance]:
    """One shipped site for every app of this module (its own access log per app)."""
    inst = start_shipped(tmp_path_factory.mktemp("verify-site"), list(APPS.values()), AUTH)
    try:
        yield inst
    finally:
        inst.stop()
        remove_containers(docker_client, [{"label": f"bluegreen.app={a}"} for a in APPS.values()])


@pytest.fixture(scope="module")
def images(docker_client: Any, test_images: dict[str, str]) -> dict[str, str]:
    return {"v1": test_images["v1"], "v2": test_images["v2"], "flaky": verify_image(docker_client, "flaky"), "sick": verify_image(docker_client, "sick")}


@pytest.fixture(scope="module")
def worlds(
    site: NginxInstance, tmp_path_factory: pytest.TempPathFactory, session_id: str, images: dict[str, str], docker_client: Any
) -> dict[str, World]:
    """Every app with blue serving v1 (deployed without verification), in one run: apps converge in parallel."""
    tmp = tmp_path_factory.mktemp("verify-worlds")
    out = {}
    for key, app in APPS.items():
        w = out[key] = World(docker_client, app, site, tmp, session_id, healthCheck={"stableSeconds": 0.5}, labels={LABEL_TEST: session_id})
        w.set(image=images["v1"], nginx={"switch": "flag"})
    r = run_reconcile(tmp / "specs", tmp / "state-dir", "--once")
    assert r.returncode == 0, r.explain()
    for w in out.values():
        _assert_serving(w, "blue", "v1")
    return out


def _assert_serving(w: World, color: str, version: str) -> None:
    """Through the site's password: the version answering, the route, the marker, the container."""
    r = httpx.get(_url(w), timeout=5)
    assert r.status_code == 200 and r.headers.get("x-app-version") == version, (r.status_code, r.headers)
    assert w.routed() == color
    assert (w.marker.read_text() if w.marker.exists() else None) == f"{color}\n"
    c = w.container(color)
    assert c is not None and c.status == "running"


def _verify(w: World, **over: Any) -> dict[str, Any]:
    spec = {
        "windowSeconds": 4,
        "maxErrorRate": 0.2,
        "minRequests": 6,
        "healthFailures": 2,
        "accessLog": str(w.nginx.dir / "logs" / f"{w.app}.access.jsonl"),
    }
    return {**spec, **over}


def _url(w: World) -> str:
    return w.nginx.public_url_for(w.app).replace("http://", "http://ops:pw@") + "/"


def _window(w: World) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((w.state / "apps" / w.app / "verify.json").read_text())
    return data


def test_bad_release_goes_back_to_the_previous_color_inside_the_window(
    worlds: dict[str, World], images: dict[str, str], tmp_path: Path
) -> None:
    w = worlds["bad"]
    w.set(image=images["flaky"], activeColor="green", verify=_verify(w))
    textfile = tmp_path / "metrics.prom"
    with Traffic(_url(w), interval=0.02, max_requests=1500, max_seconds=30) as t:
        r = w.once("--metrics-textfile", str(textfile), expect=1)
        settled = len(t.answers)
        wait_until(lambda: len(t.answers) >= settled + 20, timeout=10, message="traffic after the switch back")
    _assert_serving(w, "blue", "v1")
    # Verification judged it well inside the window (fails once minRequests are seen with a rate above the limit).
    assert r.elapsed < 15, r.explain()
    bad = [a for a in t.answers if a.status != 200]
    assert bad and all(a.version == "flaky" for a in bad), bad[:5]
    first_bad, last_bad = bad[0].at, bad[-1].at
    assert last_bad - first_bad < 4, f"5xx for {last_bad - first_bad:.1f}s"  # bounded by the window, not beyond it
    assert len(bad) <= 30, len(bad)
    assert all(a.status == 200 and a.version == "v1" for a in t.answers[settled:])
    # Remembered, said plainly, counted, and not retried.
    win = _window(w)
    assert win["state"] == "failed" and win["counts"]["requests"] >= 6, win
    memory = json.loads((w.state / "apps" / w.app / "memory.json").read_text())
    (failure,) = memory["failures"].values()
    assert failure["reason"] == FAILED_REASON and "requests 5xx" in failure["message"]
    status = w.status()  # status.json, what --status shows
    degraded = condition(status, "Degraded")
    assert degraded["status"] in (True, "True") and degraded["reason"] == FAILED_REASON, status
    assert "spec wants green, Nginx serves blue because verification of revision" in degraded["message"]
    assert f'bluegreen_verifications_total{{app="{w.app}",result="failed"}} 1.0' in textfile.read_text()
    verdicts = [h for h in history(w.state, w.app) if h["action"] == "Verify"]
    assert [h["outcome"] for h in verdicts] == ["failed"]
    switches = [h["color"] for h in history(w.state, w.app) if h["action"] == "SwitchRoute"]
    again = w.once(expect=1)
    assert "VerificationFailed" in again.stderr
    _assert_serving(w, "blue", "v1")
    assert [h["color"] for h in history(w.state, w.app) if h["action"] == "SwitchRoute"] == switches


def test_healthy_release_closes_the_window_and_only_then_stops_the_standby(
    worlds: dict[str, World], images: dict[str, str], tmp_path: Path
) -> None:
    w = worlds["good"]
    w.set(image=images["v2"], activeColor="green", standby="stop", verify=_verify(w, windowSeconds=2))
    with Traffic(_url(w), interval=0.05, max_requests=400, max_seconds=20) as t:
        r = w.once()
    assert r.elapsed >= 2, r.explain()
    assert not t.failures(), t.failures()[:5]
    _assert_serving(w, "green", "v2")
    assert _window(w)["state"] == "passed"
    steps = [(h["action"], h["outcome"]) for h in history(w.state, w.app)]
    assert steps.index(("Verify", "ok")) < steps.index(("StopContainer", "ok")), steps
    assert w.container("blue").status == "exited"


def test_health_failing_after_the_switch_and_a_kill_during_the_window_still_switch_back(
    worlds: dict[str, World], images: dict[str, str], tmp_path: Path
) -> None:
    """The `sick` release passes its health check for 3 s after its start, then fails it. The run is killed -9
    inside the window, before that: the next run resumes the same window (its probes counted so far) and switches back."""
    w = worlds["sick"]
    w.set(image=images["sick"], activeColor="green", verify=_verify(w, windowSeconds=8))
    p = start_reconcile(w.spec_path, w.state, "--once")
    try:
        seen: dict[str, Any] = wait_until(
            lambda: (lambda d: d if d["state"] == "open" and d["counts"]["probes"] >= 2 else {})(_window(w)),
            timeout=30,
            interval=0.05,
            message="an open window with probes counted",
        )
        p.kill()  # kill -9 in the middle of the window
    finally:
        p.wait(timeout=10)
    assert w.routed() == "green" and seen["counts"]["healthFailures"] == 0  # the killed run left traffic on green
    r = w.once(expect=1)
    win = _window(w)
    assert win["state"] == "failed" and "health check failed 2x" in win["figures"], (win, r.explain())
    _assert_serving(w, "blue", "v1")
    assert win["startedAt"] == seen["startedAt"] and win["counts"]["probes"] > seen["counts"]["probes"], win  # resumed
    assert time.time() < win["deadline"]
    assert "verify.start" in r.stderr
    assert [h["color"] for h in history(w.state, w.app) if h["action"] == "SwitchRoute"][-2:] == ["green", "blue"]


def test_watch_runs_the_window_in_the_apps_worker_without_holding_up_another_app(
    worlds: dict[str, World], images: dict[str, str], tmp_path: Path
) -> None:
    a, b = worlds["wa"], worlds["wb"]
    watch = WatchProcess(a.spec_path.parent, a.state, tmp_path / "watch.log", "--resync", "3600")
    try:
        watch.wait_event("reconcile.done", app=b.app)
        a.set(image=images["v2"], activeColor="green", verify=_verify(a, windowSeconds=60))
        watch.wait_event("verify.start", app=a.app)
        b.set(image=images["v2"], activeColor="green")
        wait_until(lambda: b.routed() == "green", timeout=20, message=f"{b.app} cut over while {a.app}'s window is open")
        assert _window(a)["state"] == "open" and a.routed() == "green"
        code, took = watch.stop()
        assert code == 0 and took < 10, watch.tail()
    finally:
        if watch.proc.poll() is None:
            watch.proc.kill()
            watch.proc.wait(5)
    # Stopped, not judged: the window stays open for the next run to resume.
    assert _window(a)["state"] == "open"
