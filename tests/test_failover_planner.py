"""spec.failover (issue 11 item 5): the pure rule, the planner's use of it, and the reconciler on FakeWorld.

The real-dockerd counterpart is tests/test_failover_real.py.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from controller.app.decide import decide
from controller.app.failover import WaitLiveOrFailover
from controller.app.reconcile import Reconciler
from controller.spec.app import BlueGreenApp
from controller.store.documents import FailedOver, FailoverState
from controller.store.state import StateStore
from controller.world.actions import SwitchRoute, WriteMarker
from controller.world.facts import Failure, Memory
from tests.factories import make_app
from tests.fakes import CheckedWorld, reconciler, world_for
from tests.support.plans import inputs_for, plan_for

FO: dict[str, Any] = {"failover": "previous", "failoverAfterSeconds": 2}


def deployed(tmp_path: Path, **spec: Any) -> tuple[BlueGreenApp, CheckedWorld, Reconciler]:
    """blue dialogue:1 served, then green dialogue:2 was deployed: green live, blue the warm previous color."""
    w = world_for(make_app(**spec))
    r = reconciler(w, tmp_path / "state")
    assert r.reconcile(make_app(**spec)).result == "converged"
    app = make_app(**{**spec, "image": "dialogue:2", "activeColor": "green"})
    assert r.reconcile(app).result == "converged"
    assert w.routed("dialogue") == ["127.0.0.1:18082"]
    return app, w, r


def planned(app: BlueGreenApp, w: CheckedWorld, state: FailoverState, mem: Memory | None = None) -> tuple[list[str], Any]:
    """The plan with `state` remembered in failover.json (gathering tracks it for this observation)."""
    p = plan_for(app, w, mem, failover=state)
    return [f"{a.verb}:{a.color}" for a in p.actions] + [f"!{b.reason}" for b in p.blockers], p


def failing(r: Reconciler, app: BlueGreenApp, since: float) -> FailoverState:
    return replace(r.store.load_failover(app.name), failing_color="green", failing_since=since)


def test_served_revisions_are_recorded_while_each_color_serves(tmp_path: Path) -> None:
    app, w, r = deployed(tmp_path, **FO)
    st = r.store.load_failover(app.name)
    assert st.served["green"] == w.containers["dialogue-green"].fact.revision
    assert st.served["blue"] == w.containers["dialogue-blue"].fact.revision
    assert st.failing_since is None and st.active is None


def test_live_failing_less_than_the_delay_waits_until_the_failover_instant(tmp_path: Path) -> None:
    app, w, r = deployed(tmp_path, **FO)
    w.containers["dialogue-green"].broken = True
    shown, p = planned(app, w, failing(r, app, w.now() - 0.5))
    assert p.failover.kind == "pending" and p.failover.color == "blue"
    # The switch is planned after the wait, which calls it off if green passes again before the instant.
    assert shown == ["WaitLiveOrFailover:green", "SwitchRoute:blue", "WriteMarker:blue"]
    wait = p.actions[0]
    assert isinstance(wait, WaitLiveOrFailover) and wait.deadline == w.now() + 1.5 and wait.to == "blue"


def test_pending_failover_is_called_off_when_the_live_color_passes_again(tmp_path: Path) -> None:
    app, w, r = deployed(tmp_path, **FO)
    w.containers["dialogue-green"].broken = True
    r.store.save_failover(app.name, failing(r, app, w.now()))
    real_sleep = w.sleep

    def sleep(seconds: float) -> None:
        real_sleep(seconds)
        if w.now() >= r.store.load_failover(app.name).failing_since + 1.0:  # type: ignore[operator]
            w.containers["dialogue-green"].broken = False  # recovers half-way through the delay

    w.sleep = sleep  # type: ignore[method-assign]
    assert r.reconcile(app).result == "converged"
    assert w.routed("dialogue") == ["127.0.0.1:18082"]
    assert not any(e["action"] == "FailedOver" for e in r.store.history(app.name))
    assert r.store.load_failover(app.name).active is None


def test_pending_failover_is_called_off_when_the_previous_color_fails_at_the_instant(tmp_path: Path) -> None:
    app, w, r = deployed(tmp_path, **FO)
    w.containers["dialogue-green"].broken = True
    r.store.save_failover(app.name, failing(r, app, w.now()))
    real_sleep = w.sleep

    def sleep(seconds: float) -> None:
        real_sleep(seconds)
        w.containers["dialogue-blue"].broken = True  # blue stops passing while the pass waits

    w.sleep = sleep  # type: ignore[method-assign]
    r.reconcile(app)
    assert w.routed("dialogue") == ["127.0.0.1:18082"] and w.violations == []
    assert not any(e["action"] == "FailedOver" for e in r.store.history(app.name))


def test_live_failing_for_the_delay_routes_to_the_previous_color(tmp_path: Path) -> None:
    app, w, r = deployed(tmp_path, **FO)
    w.containers["dialogue-green"].broken = True
    shown, p = planned(app, w, failing(r, app, w.now() - 2.0))
    assert shown == ["SwitchRoute:blue", "WriteMarker:blue", "!FailedOver"]
    assert p.target == "blue" and p.failover.kind == "switch"
    assert "failoverAfterSeconds 2" in p.blockers[-1].message


def test_failover_none_keeps_restart_only(tmp_path: Path) -> None:
    app, w, r = deployed(tmp_path)
    w.containers["dialogue-green"].broken = True
    _shown, p = planned(app, w, failing(r, app, w.now() - 60))
    assert p.failover.kind == "off" and p.target == "green"
    assert not any(isinstance(a, SwitchRoute) for a in p.actions)


def test_never_to_a_previous_color_that_fails_its_check(tmp_path: Path) -> None:
    app, w, r = deployed(tmp_path, **FO)
    w.containers["dialogue-green"].broken = True
    w.containers["dialogue-blue"].broken = True
    _shown, p = planned(app, w, failing(r, app, w.now() - 60))
    assert p.failover.kind == "unavailable" and "fails its health check" in p.failover.message
    assert p.target == "green" and not any(isinstance(a, SwitchRoute) for a in p.actions)


def test_never_to_a_revision_remembered_as_failed(tmp_path: Path) -> None:
    app, w, r = deployed(tmp_path, **FO)
    w.containers["dialogue-green"].broken = True
    blue_rev = w.containers["dialogue-blue"].fact.revision
    assert blue_rev is not None
    mem = Memory(failures={blue_rev: Failure(blue_rev, "blue", 1, w.now(), "VerificationFailed", "5xx 30% > 5%")})
    _shown, p = planned(app, w, failing(r, app, w.now() - 60), mem)
    assert p.failover.kind == "unavailable" and "VerificationFailed" in p.failover.message
    assert not any(isinstance(a, SwitchRoute) for a in p.actions)


def test_never_to_a_revision_that_did_not_serve_there(tmp_path: Path) -> None:
    app, w, r = deployed(tmp_path, **FO)
    w.containers["dialogue-green"].broken = True
    st = replace(failing(r, app, w.now() - 60), served={"green": "x"})  # blue's revision never seen serving
    _shown, p = planned(app, w, st)
    assert p.failover.kind == "unavailable" and "not the revision that served" in p.failover.message


def test_a_restarted_previous_color_proves_a_stability_window_first(tmp_path: Path) -> None:
    app, w, r = deployed(tmp_path, **FO)
    w.containers["dialogue-green"].broken = True
    w.docker_restarted("dialogue-blue")
    w.clock += 0.5
    shown, _p = planned(app, w, failing(r, app, w.now() - 60))
    assert shown == ["WaitHealthy:blue", "SwitchRoute:blue", "WriteMarker:blue", "!FailedOver"]


def test_a_forward_wall_clock_step_does_not_make_a_just_started_previous_color_steady(tmp_path: Path) -> None:
    """StartedAt is wall time: stepped forward (NTP, an operator), a color started by hand 0.5 s ago looks old.
    Its process's age on the boot clock (RunState.uptime) still says 0.5 s: a full window first (defect #14)."""
    app, w, r = deployed(tmp_path, **FO)
    w.containers["dialogue-green"].broken = True
    w.stop_container("dialogue-blue", 1)
    w.start_container("dialogue-blue")  # `docker start`: a restart count of 0 again
    w.clock += 0.5
    w.step_wall(3600.0)
    rs = w.run_state("dialogue-blue")
    assert rs is not None and rs.restart_count == 0 and rs.started_at is not None
    assert w.now() - rs.started_at > 3600 and rs.uptime == 0.5
    shown, _p = planned(app, w, failing(r, app, w.now() - 60))
    assert shown == ["WaitHealthy:blue", "SwitchRoute:blue", "WriteMarker:blue", "!FailedOver"]
    w.clock += app.spec.healthCheck.stableSeconds  # once it has run a window on the boot clock: steady
    shown, _p = planned(app, w, failing(r, app, w.now() - 60))
    assert shown == ["SwitchRoute:blue", "WriteMarker:blue", "!FailedOver"]


def test_without_a_remembered_failing_time_nothing_moves(tmp_path: Path) -> None:
    """The delay counts from a pass that saw the failure: a fresh state starts the clock, never switches."""
    app, w, r = deployed(tmp_path, **FO)
    w.containers["dialogue-green"].broken = True
    inputs = inputs_for(app, w, failover=FailoverState(served=r.store.load_failover(app.name).served))
    assert inputs.failover.failing_since == w.now() and inputs.failover_changed
    assert decide(inputs).failover.kind == "pending"


def test_reconcile_fails_over_records_it_and_never_flaps_back(tmp_path: Path) -> None:
    app, w, r = deployed(tmp_path, **FO)
    events: list[dict[str, Any]] = []
    r.notify = events.append
    w.containers["dialogue-green"].broken = True
    start = w.now()
    with capture_logs() as logs:
        res = r.reconcile(app)
    # One pass: waited (fake clock) until the failover instant, then switched through the normal path.
    assert w.routed("dialogue") == ["127.0.0.1:18081"] and w.files[app.marker_path] == "blue\n"
    assert start + 2 <= w.now() <= start + 3.5
    assert res.result == "degraded" and w.violations == []
    assert res.status is not None
    fo = res.status.condition("FailedOver")
    assert fo is not None and fo.status and fo.reason == "FailedOver"
    deg = res.status.condition("Degraded")
    assert deg is not None and deg.reason == "FailedOver"
    assert any(e["event"] == "failover.done" for e in logs)
    assert [e["action"] for e in r.store.history(app.name) if e["action"] == "FailedOver"] == ["FailedOver"]
    assert r.metrics.registry.get_sample_value("bluegreen_failovers_total", {"app": "dialogue"}) == 1
    st = r.store.load_failover(app.name)
    assert isinstance(st.active, FailedOver) and st.active.to_color == "blue"
    assert res.requeue.after is None  # held until the spec changes

    # The spec's color recovers: traffic stays where it is (no flapping), pass after pass, cron or watch.
    w.containers["dialogue-green"].broken = False
    for _ in range(3):
        w.clock += 30
        assert reconciler(w, tmp_path / "state").reconcile(app).result == "degraded"
        assert w.routed("dialogue") == ["127.0.0.1:18081"]
    assert r.metrics.registry.get_sample_value("bluegreen_failovers_total", {"app": "dialogue"}) == 1

    # A spec change ends it: the operator flips to the color that serves: converged, nothing moves.
    flipped = make_app(**FO, image="dialogue:1", activeColor="blue")
    assert r.reconcile(flipped).result == "converged"
    assert r.store.load_failover(app.name).active is None
    assert w.routed("dialogue") == ["127.0.0.1:18081"]
    # The releases: green's ended failed over (with why), blue's revision took traffic again; one event said so.
    rel = r.store.load_releases(app.name).releases
    assert [(x.number, x.image, x.color, x.began, x.ended) for x in rel] == [
        (1, "dialogue:1", "blue", "deploy", "replaced"), (2, "dialogue:2", "green", "deploy", "failed-over"),
        (3, "dialogue:1", "blue", "failover", "live"),
    ]
    assert rel[1].detail == st.active.reason
    assert [(e["event"], e["release"]["number"], e["previous"]["number"]) for e in events] == [("failover", 3, 2)]
    assert events[0]["text"].startswith("dialogue: failed over to #3 dialogue:1 on blue (was #2 dialogue:2): ")


def test_cron_passes_count_the_failing_time_across_runs(tmp_path: Path) -> None:
    """A pass stopped before the instant (cron's next run comes later) leaves failing-since in the state dir."""
    app, w, _ = deployed(tmp_path, **FO)
    w.containers["dialogue-green"].broken = True
    state = tmp_path / "state"
    first = inputs_for(app, w, StateStore(state))  # a pass that plans nothing it can do yet: it saves what it tracked
    assert first.failover_changed
    StateStore(state).save_failover(app.name, first.failover)
    since = StateStore(state).load_failover(app.name).failing_since
    assert since == w.now()
    w.clock += 5  # the next cron run, after failoverAfterSeconds
    r2 = reconciler(w, state)
    _shown, p = planned(app, w, r2.store.load_failover(app.name))
    assert p.failover.kind == "switch"
    r2.reconcile(app)
    assert w.routed("dialogue") == ["127.0.0.1:18081"]


def test_live_recovering_before_the_instant_keeps_traffic(tmp_path: Path) -> None:
    app, w, r = deployed(tmp_path, **FO)
    w.containers["dialogue-green"].broken = True
    r.store.save_failover(app.name, failing(r, app, w.now()))
    w.containers["dialogue-green"].broken = False
    assert r.reconcile(app).result == "converged"
    assert w.routed("dialogue") == ["127.0.0.1:18082"]
    assert r.store.load_failover(app.name).failing_since is None


def test_marker_and_route_actions_are_the_normal_switch(tmp_path: Path) -> None:
    app, w, r = deployed(tmp_path, **FO)
    w.containers["dialogue-green"].broken = True
    _, p = planned(app, w, failing(r, app, w.now() - 10))
    assert p.failover.kind == "switch"
    # Exactly the steps of a rollback to blue by hand (the release that served before): the switch and its marker.
    rollback = plan_for(make_app(**FO, image="dialogue:1", activeColor="blue"), w)
    assert p.actions == rollback.actions
    assert p.actions == (
        SwitchRoute("blue", f"remove {app.flag_file}, confirm", write_include=False, reload=False),  # nginx.switch: flag
        WriteMarker("blue", "Nginx serves blue"),
    )


def test_held_failover_returns_to_a_restarted_held_color_only_after_a_stability_window(tmp_path: Path) -> None:
    """Found by the property test: failed over to blue, Docker restarted blue, a hand edit moved Nginx to green:
    the way back onto blue proves a full window first (never onto a color that has not run stableSeconds)."""
    app, w, r = deployed(tmp_path, **FO)
    w.containers["dialogue-green"].broken = True
    r.reconcile(app)
    assert w.routed("dialogue") == ["127.0.0.1:18081"]
    w.docker_restarted("dialogue-blue")
    w.files[app.flag_file] = "green\n"  # hand edit: the flag-aware site serves green at once
    shown, p = planned(app, w, r.store.load_failover(app.name))
    assert p.failover.kind == "held"
    assert shown == ["WriteMarker:green", "WaitHealthy:blue", "SwitchRoute:blue", "WriteMarker:blue", "!FailedOver"], shown
    r.reconcile(app)
    assert w.violations == [] and w.routed("dialogue") == ["127.0.0.1:18081"]
