"""Issue 19: features that hold alone, combined (failed revisions remembered across a failover enabled later,
a kill -9 right after a failover's switch, wall-clock steps in a window and while failing). FakeWorld only."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from controller.app.decide import decide
from controller.app.failover import WaitLiveOrFailover
from controller.app.reconcile import Reconciler
from controller.drivers import accesslog
from controller.kernel.elapsed import Elapsed
from controller.spec.app import BlueGreenApp
from controller.store.state import StateStore
from controller.world.fake import Crash
from controller.world.protocol import LogPos, LogRead
from controller.world.verification import FAILED_REASON
from tests.factories import make_app
from tests.fakes import CheckedWorld, reconciler, switched_back, world_for
from tests.support.plans import inputs_for

BLUE, GREEN = "127.0.0.1:18081", "127.0.0.1:18082"


def test_failover_enabled_later_never_goes_to_a_revision_that_failed_verification(tmp_path: Path) -> None:
    """#4: a verification failure, then a spec change that names the failed revision no more, and failover enabled:
    blue failing must not move traffic to green, which still runs the revision that failed its window."""
    w, rec, v2, r = switched_back(tmp_path / "s")
    assert r.result == "degraded" and w.routed("dialogue") == [BLUE]
    failed = v2.revision("green")
    assert StateStore(tmp_path / "s").load_memory("dialogue").failures[failed].reason == FAILED_REASON
    w.containers["dialogue-green"].broken = False  # the failed release answers its health check again
    # The operator goes back to blue (a spec change: green's failed revision is named no more) ...
    back = make_app(image="dialogue:1", activeColor="blue")
    assert rec.reconcile(back).result == "converged" and w.routed("dialogue") == [BLUE]
    assert w.containers["dialogue-green"].fact.revision == failed  # still warm beside it
    w.files[back.marker_path] = "green\n"  # a pass with something to do (a drift repair) remembers what it did
    assert rec.reconcile(back).result == "converged" and w.files[back.marker_path] == "blue\n"
    # ... and later enables failover; blue fails.
    fo = make_app(image="dialogue:1", activeColor="blue", failover="previous", failoverAfterSeconds=2)
    assert rec.reconcile(fo).result == "converged"
    w.containers["dialogue-blue"].broken = True
    for _ in range(3):
        rec.reconcile(fo)
        w.clock += 5
        assert w.routed("dialogue") == [BLUE], "failed over to the revision that failed verification"
    st = StateStore(tmp_path / "s").load_failover("dialogue")
    assert st.active is None and failed in st.failed


FO: dict[str, Any] = {"failover": "previous", "failoverAfterSeconds": 2}


def _failover_pass_mutations(tmp_path: Path) -> list[str]:
    """The world mutations of the pass that fails over from green to blue (each is an instant a kill -9 may hit)."""
    w, r, app = _green_live(tmp_path / "probe")
    w.containers["dialogue-green"].broken = True
    before = len(w.mutations)
    r.reconcile(app)
    assert w.routed("dialogue") == [BLUE]
    return w.mutations[before:]


def _green_live(state: Path) -> tuple[CheckedWorld, Reconciler, BlueGreenApp]:
    w = world_for(make_app(**FO))
    r = reconciler(w, state)
    assert r.reconcile(make_app(**FO)).result == "converged"
    app = make_app(**FO, image="dialogue:2", activeColor="green")
    assert r.reconcile(app).result == "converged" and w.routed("dialogue") == [GREEN]
    return w, r, app


def test_a_kill_at_any_instant_of_a_failover_is_recovered_once_and_never_flaps(tmp_path: Path) -> None:
    """#5: kill -9 at each mutation of the failover's pass (the last: right after the confirmed switch, before the
    marker); the next run, with the failed color answering again, keeps traffic where the switch left it, records
    the failover once (history line, metric) and holds it."""
    steps = _failover_pass_mutations(tmp_path)
    assert len(steps) >= 2, steps  # the switch (flag) and the marker at least
    for k in range(len(steps) + 1):
        state = tmp_path / f"k{k}"
        w, r, app = _green_live(state)
        w.containers["dialogue-green"].broken = True
        w.crash_after = k
        try:
            r.reconcile(app)
            crashed = False
        except Crash:
            crashed = True
        assert crashed == (k < len(steps)), k
        w.crash_after = None
        switched = w.routed("dialogue") == [BLUE]
        w.containers["dialogue-green"].broken = False  # the failed color answers again
        for _ in range(2):
            w.clock += 30
            r2 = reconciler(w, state)
            res = r2.reconcile(app)
            counted = (r.metrics.registry.get_sample_value("bluegreen_failovers_total", {"app": "dialogue"}) or 0) + (
                r2.metrics.registry.get_sample_value("bluegreen_failovers_total", {"app": "dialogue"}) or 0
            )
            lines = [e for e in r2.store.history(app.name) if e["action"] == "FailedOver"]
            if switched:
                assert w.routed("dialogue") == [BLUE], f"kill after mutation {k} ({steps[:k]}): traffic flipped back"
                assert res.plan is not None and res.plan.failover.kind == "held", k
                assert r2.store.load_failover(app.name).active is not None
                assert len(lines) == 1 and counted <= 1, (k, lines)
            else:
                assert w.routed("dialogue") == [GREEN] and lines == [] and counted == 0, k
            r = r2
        assert w.violations == [], (k, w.violations)


# #10: durations from the monotonic clock; a wall-clock step either way mid-window or mid-failing wedges nothing.
MAX_SLEEPS = 400  # far more than any window or failover of these tests needs; a wedged wait hits it


@dataclass
class Traffic(CheckedWorld):
    """Nginx proxies one request per sleep to what it routes to and logs it with its own clock ($msec, the wall
    clock, `skew` apart from the controller's); green answers `green_status`. `steps` wall-clock steps are made
    at given sleeps after traffic first reaches green."""

    log: Path = Path("/var/log/nginx/bluegreen.access.log")
    green_status: str = "200"
    skew: float = 0.0
    steps: dict[int, float] | None = None
    sleeps: int = 0
    on_green: int = 0

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        self.sleeps += 1
        assert self.sleeps < MAX_SLEEPS, "wedged: waited far past the window (a wall-clock step moved a deadline)"
        routed = self.routed("dialogue")
        if routed == [GREEN]:
            self.on_green += 1
            step = (self.steps or {}).get(self.on_green)
            if step is not None:
                self.step_wall(step)
        for server in routed:
            self.write_log(line(self.now() + self.skew, server, self.green_status if server == GREEN else "200"))

    def write_log(self, record: bytes) -> None:
        self.log_access(self.log, record)


def line(t: float, addr: str, status: str) -> bytes:
    """A line as the shipped log_format writes it (docs/nginx.md)."""
    return json.dumps({"msec": f"{t:.3f}", "status": status, "upstream_addr": addr, "upstream_status": status, "upstream_response_time": "0.010"}).encode()


def _verified(w: Traffic, tmp_path: Path, **verify: Any) -> tuple[Reconciler, BlueGreenApp]:
    w.include_paths.add(make_app().upstream_file)
    rec = reconciler(w, tmp_path / "s")
    assert rec.reconcile(make_app()).result == "converged"
    spec = {"windowSeconds": 10, "minRequests": 4, "maxErrorRate": 0.1, "accessLog": str(w.log), **verify}
    return rec, make_app(image="dialogue:2", activeColor="green", verify=spec)


@pytest.mark.parametrize("step", [-86_400.0, 86_400.0])
def test_a_wall_clock_step_mid_window_neither_wedges_nor_shortens_it(tmp_path: Path, step: float) -> None:
    w = Traffic(images=world_for().images, steps={3: step})
    rec, v2 = _verified(w, tmp_path)
    start = w.monotonic()
    assert rec.reconcile(v2).result == "converged" and w.routed("dialogue") == [GREEN]
    window = StateStore(tmp_path / "s").load_window("dialogue")
    assert window is not None and window.state == "passed", window
    # Judged for windowSeconds of the monotonic clock (plus the deploy before it), not a day more or less.
    assert 10 <= w.monotonic() - start <= 20, w.monotonic() - start
    assert window.counts.requests >= 10 and "fewer than minRequests" not in window.figures


def test_a_wall_clock_step_forward_never_passes_a_failing_release_unjudged(tmp_path: Path) -> None:
    w = Traffic(images=world_for().images, green_status="502", steps={1: 120.0})
    rec, v2 = _verified(w, tmp_path)
    assert rec.reconcile(v2).result == "degraded" and w.routed("dialogue") == [BLUE] and w.violations == []
    window = StateStore(tmp_path / "s").load_window("dialogue")
    assert window is not None and window.state == "failed" and window.figures.startswith("error rate above maxErrorRate"), window


def test_a_window_resumed_after_a_kill_and_a_step_back_has_at_most_window_seconds_left(tmp_path: Path) -> None:
    w = Traffic(images=world_for().images)
    rec, v2 = _verified(w, tmp_path)
    stopped = [False]

    def stop() -> bool:  # stands in for a kill -9 mid-window: the window stays open in verify.json
        stopped[0] = stopped[0] or w.on_green >= 4
        return stopped[0]

    rec.reconcile(v2, should_stop=stop)
    window = StateStore(tmp_path / "s").load_window("dialogue")
    assert window is not None and window.open
    w.step_wall(-86_400.0)
    w.clock += 1  # the next cron run
    start = w.monotonic()
    assert reconciler(w, tmp_path / "s").reconcile(v2).result == "converged"
    window = StateStore(tmp_path / "s").load_window("dialogue")
    assert window is not None and window.state == "passed" and w.monotonic() - start <= 10


@dataclass
class RealLog(Traffic):
    """The access log is a real file, read by the real driver (controller/drivers/accesslog.py)."""

    def write_log(self, record: bytes) -> None:
        with self.log.open("ab") as f:
            f.write(record + b"\n")

    def access_log_end(self, path: Path) -> LogPos:
        return accesslog.end(path)

    def read_access_log(self, path: Path, pos: LogPos) -> LogRead:
        return accesslog.read_since(path, pos)


@pytest.mark.parametrize("skew", [-86_400.0, 120.0])
def test_the_window_is_bounded_by_the_log_offset_noted_at_the_switch_not_by_nginx_clock(tmp_path: Path, skew: float) -> None:
    """Nginx's clock (`$msec`) a day behind or two minutes ahead of the controller's: every line the real log gets
    after the offset noted at the switch is the window's (green's 502s fail it); none before it counts."""
    w = RealLog(images=world_for().images, log=tmp_path / "access.log", green_status="502", skew=skew)
    w.write_log(line(w.now() + 3600, GREEN, "502"))  # before the switch, with any time: never the window's
    rec, v2 = _verified(w, tmp_path)
    assert rec.reconcile(v2).result == "degraded" and w.routed("dialogue") == [BLUE]
    window = StateStore(tmp_path / "s").load_window("dialogue")
    assert window is not None and window.state == "failed", window
    assert window.counts.errors == window.counts.requests == w.on_green, (window.counts, w.on_green)


def _failing(tmp_path: Path) -> tuple[CheckedWorld, Reconciler, BlueGreenApp]:
    w, r, app = _green_live(tmp_path / "s")
    w.containers["dialogue-green"].broken = True
    return w, r, app


def test_a_wall_clock_step_back_while_the_live_color_fails_still_fails_over_on_time(tmp_path: Path) -> None:
    w, r, app = _failing(tmp_path)
    first = inputs_for(app, w, r.store)  # a pass that sees green failing (cron), saved
    r.store.save_failover(app.name, first.failover)
    w.step_wall(-86_400.0)
    w.clock += 5  # past failoverAfterSeconds on the monotonic clock
    start = w.monotonic()
    reconciler(w, tmp_path / "s").reconcile(app)
    assert w.routed("dialogue") == [BLUE] and w.monotonic() - start <= 3


def test_a_wall_clock_step_forward_while_the_live_color_fails_does_not_fail_over_early(tmp_path: Path) -> None:
    w, r, app = _failing(tmp_path)
    first = inputs_for(app, w, r.store)
    r.store.save_failover(app.name, first.failover)
    w.step_wall(120.0)
    w.clock += 0.5
    p = decide(inputs_for(app, w, r.store))
    assert p.failover.kind == "pending", p.failover
    wait = p.actions[0]
    assert isinstance(wait, WaitLiveOrFailover) and wait.deadline is not None
    assert wait.deadline == pytest.approx(w.monotonic() + 1.5)  # the instant on the monotonic clock


def test_a_reboot_counts_no_failing_time_even_when_the_new_uptime_is_past_the_last_reading(tmp_path: Path) -> None:
    """The monotonic clock restarts at a reboot; the first pass after it can read more than the last one did (the
    host was up 40 s when it saw green failing, the pass comes 500 s into the next boot). The boot id tells the
    readings apart: the time counted is what each boot saw, not the difference of two boots' readings."""
    w, r, app = _failing(tmp_path)
    first = inputs_for(app, w, r.store)  # green seen failing
    r.store.save_failover(app.name, first.failover)
    assert first.failover.failing_for is not None and first.failover.failing_for.boot == w.boot_id()
    w.reboot(uptime=w.monotonic() + 500.0)
    p = decide(inputs_for(app, w, r.store))
    assert p.failover.kind == "pending", p.failover  # 0 s counted across the reboot, not 500 s: no failover yet
    wait = p.actions[0]
    assert isinstance(wait, WaitLiveOrFailover) and wait.deadline == pytest.approx(w.monotonic() + 2.0)


def test_a_reboot_mid_window_counts_no_time_across_it(tmp_path: Path) -> None:
    """The same for a verification window: only the time each boot saw counts toward windowSeconds."""
    e = Elapsed(12.0, 40.0, "boot-a")
    assert e.at(45.0, "boot-a") == Elapsed(17.0, 45.0, "boot-a")
    assert e.at(540.0, "boot-b") == Elapsed(12.0, 540.0, "boot-b")  # another boot: nothing counted, then from here
    assert e.at(540.0, "boot-b").at(541.0, "boot-b").seconds == 13.0
    assert Elapsed(12.0, 40.0).at(45.0, "boot-a").seconds == 17.0  # written before the boot was kept: as before
    assert e.at(30.0, "boot-a").seconds == 12.0  # a reading below the last adds nothing


def test_a_wall_clock_step_back_never_stretches_a_health_wait(tmp_path: Path) -> None:
    """The wait on a failing live color has a deadline from Docker's StartedAt (wall time): a day back, it still
    ends within timeoutSeconds of the monotonic clock (found by tests/test_combined_machine.py)."""
    w = world_for(make_app())
    r = reconciler(w, tmp_path / "s")
    assert r.reconcile(make_app()).result == "converged"
    w.containers["dialogue-blue"].broken = True
    w.step_wall(-86_400.0)
    start = w.monotonic()
    r.reconcile(make_app())
    assert w.monotonic() - start <= make_app().spec.healthCheck.timeoutSeconds + 5
