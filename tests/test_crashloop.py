"""Rule 1 against crash loops (issue 10, item 1), on the in-memory world: fast and exact about time.

A color that does not serve gets traffic only when it passes now AND has run without a restart by Docker
for `stableSeconds`; otherwise the pass waits out a full window, which fails if the container restarts.
The same scenarios run on real Docker and nginx in tests/test_real_crash.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from controller.app.apply import Context, apply
from controller.kernel.backoff import DEFAULT_POLICY, BackoffPolicy
from controller.kernel.errors import HealthCheckFailed
from controller.kernel.logs import get_logger
from controller.spec.app import BlueGreenApp
from controller.world.actions import WaitHealthy
from controller.world.facts import Memory
from controller.world.fake import FakeImage
from controller.world.protocol import ContainerRequest
from tests.factories import make_app
from tests.fakes import CheckedWorld, reconciler
from tests.support.plans import plan_for

IMAGES = {"dialogue:1": FakeImage(), "dialogue:2": FakeImage(), "dialogue:loop": FakeImage("crashloop", 1.5)}


def _world(app: BlueGreenApp) -> CheckedWorld:
    w = CheckedWorld(images=dict(IMAGES), stable_seconds=app.spec.healthCheck.stableSeconds)
    w.include_paths.add(app.upstream_file)
    return w


def _verbs(app: BlueGreenApp, w: CheckedWorld, mem: Memory | None = None, policy: BackoffPolicy = DEFAULT_POLICY) -> list[str]:
    p = plan_for(app, w, mem or Memory(), policy=policy)
    return [f"{a.verb}:{a.color}" for a in p.actions] + [f"!{b.reason}" for b in p.blockers]


def _deployed(tmp_path: Path) -> tuple[BlueGreenApp, CheckedWorld]:
    """v1 on blue, then v2 on green: green serves, blue idles (running, never restarted)."""
    v1 = make_app()
    w = _world(v1)
    assert reconciler(w, tmp_path / "state").reconcile(v1).result == "converged"
    v2 = make_app(image="dialogue:2", activeColor="green")
    assert reconciler(w, tmp_path / "state").reconcile(v2).result == "converged"
    assert w.violations == []
    return v2, w


def test_rollback_onto_a_steady_color_is_a_switch_without_a_wait(tmp_path: Path) -> None:
    _, w = _deployed(tmp_path)
    w.clock += 60
    back = make_app(activeColor="blue")
    assert _verbs(back, w) == ["SwitchRoute:blue", "WriteMarker:blue"]
    assert reconciler(w, tmp_path / "state").reconcile(back).result == "converged"
    assert w.violations == []


@pytest.mark.parametrize("how", ["restarted", "young", "restarting"])
def test_a_color_that_restarted_or_started_within_the_window_waits_a_full_window_first(tmp_path: Path, how: str) -> None:
    _, w = _deployed(tmp_path)
    w.clock += 60
    blue = w.containers["dialogue-blue"]
    if how == "restarted":
        w.docker_restarted("dialogue-blue")  # the app died, Docker started it again
        w.clock += 60  # long ago: the restart count still says it has not been proven since
    elif how == "young":
        blue.started_at = w.clock - 1.0  # (re)started by hand 1 s ago, count 0: younger than the 2 s window
    else:
        w.docker_restarted("dialogue-blue")
        blue.fact = replace(blue.fact, state="restarting")
        blue.restart_at = w.clock + 5
    back = make_app(activeColor="blue")
    p = plan_for(back, w, Memory())
    started = w.clock
    result = reconciler(w, tmp_path / "state").reconcile(back).result
    assert w.violations == []
    if how == "restarting":
        # Between two runs: no probe to pass at all. It is started (a no-op for Docker) and waited on; a
        # restart delay longer than the wait fails the rollback, and traffic stays where it is.
        assert [a.verb for a in p.actions][:2] == ["StartContainer", "WaitHealthy"], p.actions
        assert result == "degraded" and w.routed("dialogue") == ["127.0.0.1:18082"]
        return
    assert [a.verb for a in p.actions][:2] == ["WaitHealthy", "SwitchRoute"], p.actions
    assert result == "converged"
    assert w.clock - started >= 2.0  # a full window was waited out


def test_crash_loop_answering_up_after_the_backoff_is_waited_on_and_fails(tmp_path: Path) -> None:
    """The issue's scenario: the next run after the backoff meets the crash loop just after a restart."""
    v1 = make_app()
    w = _world(v1)
    rec = reconciler(w, tmp_path / "state", base=1.0)
    assert rec.reconcile(v1).result == "converged"
    loop = make_app(image="dialogue:loop", activeColor="green")
    assert rec.reconcile(loop).result == "degraded"
    mem = rec.store.load_memory("dialogue")
    assert [f.count for f in mem.failures.values()] == [1]
    # Past the backoff, at an instant Docker has just restarted green: it runs and answers UP.
    w.clock += 30
    for _ in range(10_000):
        rs = w.run_state("dialogue-green")
        if rs is not None and rs.running and rs.restart_count > 0 and rs.started_at is not None and w.clock - rs.started_at < 0.3:
            break
        w.clock += 0.05
    assert w.probe_health("http://127.0.0.1:18082/actuator/health", 200, 1).ok
    assert _verbs(loop, w, mem, rec.policy)[:2] == ["WaitHealthy:green", "SwitchRoute:green"]
    assert rec.reconcile(loop).result == "degraded"
    assert w.routed("dialogue") == ["127.0.0.1:18081"] and w.files[loop.marker_path] == "blue\n"
    assert [f.count for f in rec.store.load_memory("dialogue").failures.values()] == [2]
    assert w.violations == []


@dataclass
class RestartsOnce(CheckedWorld):
    """Docker restarts the container between two probes (a gap shorter than the probe interval)."""

    restart_at: float = 0.0
    restart_name: str = ""

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if self.restart_name and self.clock >= self.restart_at:
            self.docker_restarted(self.restart_name)
            self.restart_name = ""


def test_wait_fails_when_the_container_restarts_in_its_window_though_every_probe_passes(tmp_path: Path) -> None:
    app = make_app(activeColor="green")
    w = RestartsOnce(images=dict(IMAGES))
    w.include_paths.add(app.upstream_file)
    w.create_container(ContainerRequest("dialogue-green", "dialogue:1", {}, {}, 8081, "127.0.0.1", 18082))
    w.restart_at, w.restart_name = w.clock + 1.0, "dialogue-green"
    ctx = Context(app=app, world=w, log=get_logger(app="dialogue"), record=lambda a, ok, m: None)
    with capture_logs():
        result = apply(ctx, [WaitHealthy("green", "test")])
    assert isinstance(result.error, HealthCheckFailed)
    assert "restarted within its stability window" in str(result.error) and "0 -> 1" in str(result.error)
    json.dumps(str(result.error))  # one line, printable
    assert "\n" not in str(result.error)


def test_failure_memory_is_cleared_only_by_a_pass_that_proves_the_color(tmp_path: Path) -> None:
    v1 = make_app()
    w = _world(v1)
    rec = reconciler(w, tmp_path / "state")
    assert rec.reconcile(v1).result == "converged"
    loop = make_app(image="dialogue:loop", activeColor="green")
    assert rec.reconcile(loop).result == "degraded"
    # While it backs off, a hand edit of the marker is repaired: that pass proves nothing about green.
    w.files[loop.marker_path] = "garbage\n"
    assert _verbs(loop, w, rec.store.load_memory("dialogue")) == ["WriteMarker:blue", "!BackingOff"]
    [before] = rec.store.load_memory("dialogue").failures.values()
    r = rec.reconcile(loop)
    assert r.result == "degraded" and w.files[loop.marker_path] == "blue\n"
    # Still backing off: green was not retried within the same run, the failure is the same one.
    assert [a.split(":")[0] for a in r.actions_done] == ["WriteMarker(blue)"]
    assert list(rec.store.load_memory("dialogue").failures.values()) == [before]


def _rollback_ready(app: BlueGreenApp, w: CheckedWorld, tmp_path: Path) -> bool:
    status = reconciler(w, tmp_path / "state").status_only(app)
    cond = status.condition("RollbackReady")
    assert cond is not None
    return bool(cond.status)


def test_rollback_ready_only_for_our_own_steady_idle_color(tmp_path: Path) -> None:
    v2, w = _deployed(tmp_path)
    w.clock += 60
    assert _rollback_ready(v2, w, tmp_path) is True
    # A container under our name without our labels is never rolled back to (ForeignContainer).
    c = w.containers["dialogue-blue"]
    c.fact = replace(c.fact, labels={})
    assert _rollback_ready(v2, w, tmp_path) is False
    assert _verbs(make_app(activeColor="blue"), w) == ["!ForeignContainer"]
