"""Issue 19: features that hold alone, combined (failed revisions remembered across a failover enabled later,
a kill -9 right after a failover's switch, wall-clock steps in a window and while failing). FakeWorld only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from controller.store.state import StateStore
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
