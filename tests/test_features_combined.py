"""Issue 19: features that hold alone, combined (failed revisions remembered across a failover enabled later,
a kill -9 right after a failover's switch, wall-clock steps in a window and while failing). FakeWorld only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from controller.app.reconcile import Reconciler
from controller.spec.app import BlueGreenApp
from controller.store.state import StateStore
from controller.world.fake import Crash
from controller.world.verification import FAILED_REASON
from tests.factories import make_app
from tests.fakes import CheckedWorld, reconciler, world_for

BLUE, GREEN = "127.0.0.1:18081", "127.0.0.1:18082"


@dataclass
class SickAfterSwitch(CheckedWorld):
    """green stops answering its health check while traffic is on it (verification fails it)."""

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        c = self.containers.get("dialogue-green")
        if c is not None and self.routed("dialogue") == [GREEN]:
            c.broken = True


def test_failover_enabled_later_never_goes_to_a_revision_that_failed_verification(tmp_path: Path) -> None:
    """#4: a verification failure, then a spec change that names the failed revision no more, and failover enabled:
    blue failing must not move traffic to green, which still runs the revision that failed its window."""
    base = world_for(make_app())
    w = SickAfterSwitch(images=base.images)
    w.include_paths |= base.include_paths
    rec = reconciler(w, tmp_path / "s")
    assert rec.reconcile(make_app()).result == "converged"
    v2 = make_app(image="dialogue:2", activeColor="green", verify={"windowSeconds": 10, "healthFailures": 2, "accessLog": str(tmp_path / "none.log")})
    assert rec.reconcile(v2).result == "degraded" and w.routed("dialogue") == [BLUE]
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


FO = {"failover": "previous", "failoverAfterSeconds": 2}


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
                assert res.plan is not None and res.plan.failover.kind == "held", (k, res.plan.failover)
                assert r2.store.load_failover(app.name).active is not None
                assert len(lines) == 1 and counted <= 1, (k, lines)
            else:
                assert w.routed("dialogue") == [GREEN] and lines == [] and counted == 0, k
            r = r2
        assert w.violations == [], (k, w.violations)
