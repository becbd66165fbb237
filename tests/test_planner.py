"""The planner and reconciler against the in-memory world: fast, exhaustive over the rules of issue #2."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from controller.app.routing import render_include
from controller.spec.app import BlueGreenApp
from controller.world.actions import (
    CreateContainer,
    RemoveContainer,
    StartContainer,
    StopContainer,
    SwitchRoute,
    WaitHealthy,
    WriteMarker,
)
from controller.world.facts import Memory
from controller.world.fake import Crash, FakeImage, FakeWorld
from tests.factories import make_app
from tests.fakes import CheckedWorld, reconciler, world_for
from tests.support.plans import plan_for


def verbs(app: BlueGreenApp, w: CheckedWorld, mem: Memory | None = None) -> list[str]:
    p = plan_for(app, w, mem)
    return [f"{a.verb}:{a.color}" for a in p.actions] + [f"!{b.reason}" for b in p.blockers]


def converge(app: BlueGreenApp, w: CheckedWorld, tmp_path: Path, **kw: float) -> str:
    r = reconciler(w, tmp_path / "state", **kw).reconcile(app)
    assert w.violations == []
    return r.result


def test_fresh_host_plans_a_full_deploy_in_order(tmp_path: Path) -> None:
    app = make_app()
    w = world_for(app)
    assert verbs(app, w) == [
        "CreateContainer:blue",
        "WaitHealthy:blue",
        "SwitchRoute:blue",
        "WriteMarker:blue",
    ]
    assert converge(app, w, tmp_path) == "converged"
    assert w.files[app.marker_path] == "blue\n"
    assert w.files[app.upstream_file] == render_include(app, "blue")
    assert w.routed("dialogue") == ["127.0.0.1:18081"]


def test_converged_world_plans_nothing_and_touches_nothing(tmp_path: Path) -> None:
    app = make_app()
    w = world_for(app)
    converge(app, w, tmp_path)
    w.mutations.clear()
    assert verbs(app, w) == []
    assert converge(app, w, tmp_path) == "converged"
    assert w.mutations == []


def test_deploy_flips_color_and_keeps_the_old_one(tmp_path: Path) -> None:
    v1 = make_app()
    w = world_for(v1)
    converge(v1, w, tmp_path)
    v2 = make_app(image="dialogue:2", activeColor="green")
    assert verbs(v2, w) == ["CreateContainer:green", "WaitHealthy:green", "SwitchRoute:green", "WriteMarker:green"]
    assert converge(v2, w, tmp_path) == "converged"
    assert w.routed("dialogue") == ["127.0.0.1:18082"]
    assert w.containers["dialogue-blue"].fact.state == "running"
    assert w.files[v2.marker_path] == "green\n"


def test_rollback_switches_without_recreating(tmp_path: Path) -> None:
    v1 = make_app()
    w = world_for(v1)
    converge(v1, w, tmp_path)
    converge(make_app(image="dialogue:2", activeColor="green"), w, tmp_path)
    blue_id = w.containers["dialogue-blue"].fact.id
    w.mutations.clear()
    assert verbs(v1, w) == ["SwitchRoute:blue", "WriteMarker:blue"]
    assert converge(v1, w, tmp_path) == "converged"
    assert w.containers["dialogue-blue"].fact.id == blue_id
    assert not any(m.startswith(("create", "remove", "stop")) and "/" not in m for m in w.mutations)  # files aside


@pytest.mark.parametrize("change", [{"image": "dialogue:2"}, {"env": {"A": "b"}}])
def test_changing_the_live_color_in_place_is_refused(tmp_path: Path, change: dict[str, Any]) -> None:
    v1 = make_app()
    w = world_for(v1)
    converge(v1, w, tmp_path)
    w.mutations.clear()
    v2 = make_app(**change)  # same activeColor
    assert verbs(v2, w) == ["!LiveColorOutdated"]
    r = reconciler(w, tmp_path / "state").reconcile(v2)
    assert r.result == "blocked" and not r.converged
    assert w.mutations == []
    assert "set activeColor: green" in r.plan.blockers[0].message  # type: ignore[union-attr]


def test_failed_deploy_leaves_traffic_and_backs_off(tmp_path: Path) -> None:
    v1 = make_app()
    w = world_for(v1)
    converge(v1, w, tmp_path)
    bad = make_app(image="dialogue:bad", activeColor="green")
    t0 = w.clock
    assert converge(bad, w, tmp_path, base=60) == "degraded"
    assert w.clock - t0 >= 10  # waited the whole timeoutSeconds once
    assert w.routed("dialogue") == ["127.0.0.1:18081"]
    assert w.files[bad.marker_path] == "blue\n"
    # The next run does not wait again: it backs off.
    t1 = w.clock
    assert verbs(bad, w, reconciler(w, tmp_path / "state").store.load_memory("dialogue")) == ["!BackingOff"]
    assert converge(bad, w, tmp_path, base=60) == "degraded"
    assert w.clock == t1
    # After the backoff it tries again: a fresh container.
    w.clock += 61
    mem = reconciler(w, tmp_path / "state").store.load_memory("dialogue")
    assert verbs(bad, w, mem)[:3] == ["RemoveContainer:green", "CreateContainer:green", "WaitHealthy:green"]
    assert converge(bad, w, tmp_path, base=60) == "degraded"
    mem = reconciler(w, tmp_path / "state").store.load_memory("dialogue")
    assert [f.count for f in mem.failures.values()] == [2]
    # A spec change is tried at once.
    good = make_app(image="dialogue:2", activeColor="green")
    assert converge(good, w, tmp_path) == "converged"
    assert w.routed("dialogue") == ["127.0.0.1:18082"]


def _converged_v1(tmp_path: Path) -> tuple[BlueGreenApp, CheckedWorld]:
    app = make_app()
    w = world_for(app)
    converge(app, w, tmp_path)
    w.mutations.clear()
    return app, w


def test_drift_live_container_stopped(tmp_path: Path) -> None:
    app, w = _converged_v1(tmp_path)
    w.stop_container("dialogue-blue", 1)
    assert verbs(app, w) == ["StartContainer:blue", "WaitHealthy:blue"]
    assert converge(app, w, tmp_path) == "converged"


def test_drift_live_container_removed(tmp_path: Path) -> None:
    app, w = _converged_v1(tmp_path)
    w.remove_container("dialogue-blue")
    assert verbs(app, w) == ["CreateContainer:blue", "WaitHealthy:blue"]
    assert converge(app, w, tmp_path) == "converged"


@pytest.mark.parametrize(
    "labels",
    [
        {},  # someone ran a container called dialogue-green by hand
        {"bluegreen.app": "dialogue", "bluegreen.color": "green"},  # our app label, but not managed by us
        {"bluegreen.managed-by": "bluegreen-controller", "bluegreen.app": "other"},  # another app's
    ],
)
def test_foreign_container_with_our_name_is_left_alone_and_never_routed_to(tmp_path: Path, labels: dict[str, str]) -> None:
    """Issue 10 item 10: a container under our name that we did not create is someone else's, not drift."""
    app = make_app(activeColor="green", standby="stop")
    w = world_for(app)
    converge(make_app(), w, tmp_path)
    c = w.containers["dialogue-blue"]
    w.containers["dialogue-green"] = replace(c, fact=replace(c.fact, name="dialogue-green", id="f" * 64, labels=labels, host_port=18082))
    assert verbs(app, w) == ["!ForeignContainer"]
    p = plan_for(app, w, Memory())
    assert "dialogue-green" in p.blockers[0].message and p.target == "blue"  # traffic stays where it is
    assert converge(app, w, tmp_path) == "degraded"
    assert w.containers["dialogue-green"].fact.id == "f" * 64 and w.containers["dialogue-green"].fact.state == "running"
    assert w.routed("dialogue") == ["127.0.0.1:18081"] and w.files[app.marker_path] == "blue\n"
    # Blue, ours, serving and idle-to-be: never stopped for a standby: stop that would hand traffic to a stranger.
    assert w.containers["dialogue-blue"].fact.state == "running"
    # Once the operator removes it, the deploy proceeds.
    del w.containers["dialogue-green"]
    assert converge(app, w, tmp_path) == "converged"
    assert w.containers["dialogue-green"].fact.labels["bluegreen.revision"] == app.revision("green")


@pytest.mark.parametrize("content", [None, "upstream dialogue { server 127.0.0.1:18082; }\n", "# hand edit\n"])
def test_drift_include_edited_or_deleted(tmp_path: Path, content: str | None) -> None:
    app, w = _converged_v1(tmp_path)
    if content is None:
        del w.files[app.upstream_file]
    else:
        w.files[app.upstream_file] = content
    assert verbs(app, w) == ["SwitchRoute:blue"]
    assert converge(app, w, tmp_path) == "converged"
    assert w.files[app.upstream_file] == render_include(app, "blue")


def test_drift_include_written_but_not_reloaded(tmp_path: Path) -> None:
    app, w = _converged_v1(tmp_path)
    w.loaded["dialogue-blue"] = ["127.0.0.1:9999"]  # the live color's upstream (flag absent: blue)
    p = plan_for(app, w, Memory())
    assert [type(a) for a in p.actions] == [SwitchRoute] and p.actions[0].write_include is False  # type: ignore[attr-defined]
    assert converge(app, w, tmp_path) == "converged"


@pytest.mark.parametrize("marker", [None, "", "purple\n", "green\n", "\x00\x01garbage"])
def test_drift_marker_always_ends_naming_the_live_color(tmp_path: Path, marker: str | None) -> None:
    app, w = _converged_v1(tmp_path)
    if marker is None:
        del w.files[app.marker_path]
    else:
        w.files[app.marker_path] = marker
    assert verbs(app, w) == ["WriteMarker:blue"]
    assert converge(app, w, tmp_path) == "converged"
    assert w.files[app.marker_path] == "blue\n"


def test_stale_marker_after_failed_deploy_names_the_real_route(tmp_path: Path) -> None:
    """The old script's bug: after a failed deploy the marker named the wrong color."""
    v1 = make_app()
    w = world_for(v1)
    converge(v1, w, tmp_path)
    w.files[v1.marker_path] = "green\n"  # what the old script left behind
    bad = make_app(image="dialogue:bad", activeColor="green")
    assert converge(bad, w, tmp_path) == "degraded"
    assert w.files[bad.marker_path] == "blue\n"


def test_failed_nginx_test_restores_the_include(tmp_path: Path) -> None:
    v1 = make_app(nginx={"switch": "reload"})  # a switch that reloads (flag mode: see test_nginx_site.py)
    w = world_for(v1)
    converge(v1, w, tmp_path)
    before = w.files[v1.upstream_file]
    w.nginx_test_fails = True
    v2 = make_app(image="dialogue:2", activeColor="green", nginx={"switch": "reload"})
    r = reconciler(w, tmp_path / "state").reconcile(v2)
    assert r.result == "error" and "configuration file test failed" in (r.error or "")
    assert w.files[v1.upstream_file] == before
    assert w.routed("dialogue") == ["127.0.0.1:18081"]
    assert w.files[v1.marker_path] == "blue\n"


def test_rejected_reload_restores_the_include_and_keeps_the_marker(tmp_path: Path) -> None:
    v1 = make_app(nginx={"switch": "reload"})  # a switch that reloads (flag mode: see test_nginx_site.py)
    w = world_for(v1)
    converge(v1, w, tmp_path)
    before = w.files[v1.upstream_file]
    w.reload_ignored = True
    r = reconciler(w, tmp_path / "state").reconcile(make_app(image="dialogue:2", activeColor="green", nginx={"switch": "reload"}))
    assert r.result == "error" and "still routes" in (r.error or "")
    assert w.files[v1.upstream_file] == before
    assert w.files[v1.marker_path] == "blue\n"


def test_nginx_down_is_reported_not_guessed(tmp_path: Path) -> None:
    app, w = _converged_v1(tmp_path)
    w.nginx_up = False
    assert verbs(app, w) == ["!RouteUnverified"]
    assert converge(app, w, tmp_path) == "degraded"
    assert w.mutations == []


def test_standby_stop_stops_the_old_color_after_the_switch(tmp_path: Path) -> None:
    v1 = make_app(standby="stop")
    w = world_for(v1)
    converge(v1, w, tmp_path)
    v2 = make_app(image="dialogue:2", activeColor="green", standby="stop")
    assert verbs(v2, w)[-1] == "StopContainer:blue"
    assert converge(v2, w, tmp_path) == "converged"
    assert w.containers["dialogue-blue"].fact.state == "exited"
    # Rollback starts it again, waits for health, then switches.
    assert verbs(v1, w) == ["StartContainer:blue", "WaitHealthy:blue", "SwitchRoute:blue", "WriteMarker:blue", "StopContainer:green"]
    assert converge(v1, w, tmp_path) == "converged"


def test_live_container_unhealthy_is_never_replaced(tmp_path: Path) -> None:
    app, w = _converged_v1(tmp_path)
    w.containers["dialogue-blue"].broken = True
    w.clock += 3600  # long past its health deadline
    assert verbs(app, w) == ["!LiveUnhealthy"]
    assert converge(app, w, tmp_path) == "degraded"
    assert not any(m.startswith(("remove", "create", "stop")) for m in w.mutations)


def test_docker_down_changes_nothing(tmp_path: Path) -> None:
    _app, w = _converged_v1(tmp_path)
    w.docker_up = False
    r = reconciler(w, tmp_path / "state").reconcile(make_app(image="dialogue:2", activeColor="green"))
    assert r.result == "error" and "Docker daemon unreachable" in (r.error or "")
    assert w.mutations == []


def test_missing_image_is_a_clear_error_and_changes_nothing_live(tmp_path: Path) -> None:
    _app, w = _converged_v1(tmp_path)
    r = reconciler(w, tmp_path / "state").reconcile(make_app(image="dialogue:404", activeColor="green"))
    assert r.result == "error" and "dialogue:404" in (r.error or "")
    assert w.routed("dialogue") == ["127.0.0.1:18081"]
    assert "dialogue-green" not in w.containers


def test_plan_actions_are_typed_in_order(tmp_path: Path) -> None:
    app = make_app()
    w = world_for(app)
    p = plan_for(app, w, Memory())
    assert [type(a) for a in p.actions] == [CreateContainer, WaitHealthy, SwitchRoute, WriteMarker]
    assert not any(isinstance(a, (RemoveContainer, StartContainer, StopContainer)) for a in p.actions)


def test_slow_image_is_waited_for(tmp_path: Path) -> None:
    v1 = make_app()
    w = world_for(v1, images={"dialogue:1": FakeImage(), "dialogue:slow": FakeImage("slow", 4)})
    converge(v1, w, tmp_path)
    assert converge(make_app(image="dialogue:slow", activeColor="green"), w, tmp_path) == "converged"


@pytest.mark.parametrize("switch", ["flag", "reload"])
def test_marker_is_rewritten_after_the_switch_when_it_was_first_corrected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, switch: str
) -> None:
    """Nginx serves green by a hand edit, the marker still says blue: marker -> green now, -> blue after the switch."""
    app = make_app(nginx={"switch": switch})
    w = world_for(app)
    # Both colors run healthy (green deployed, then rolled back): blue serves, the marker says blue.
    for a in (app, make_app(activeColor="green", nginx={"switch": switch}), app):
        assert converge(a, w, tmp_path) == "converged"
    assert w.routed("dialogue") == ["127.0.0.1:18081"] and w.files[app.marker_path] == "blue\n"

    # The hand edit, in the way each mode switches: create the flag file / make a green include live.
    if switch == "flag":
        w.files[app.flag_file] = ""
    else:
        w.files[app.upstream_file] = render_include(app, "green")
        FakeWorld.reload(w)  # a perturbation, not the controller's reload: not checked by CheckedWorld
    assert w.routed("dialogue") == ["127.0.0.1:18082"] and w.files[app.marker_path] == "blue\n"

    # Every marker write, with what Nginx served at that moment: the marker names the served color at each step.
    markers: list[tuple[str, list[str]]] = []
    write_file = w.write_file

    def spy(path: Path, content: str, mode: int = 0o644) -> None:
        write_file(path, content, mode)
        if path == app.marker_path:
            markers.append((content, w.routed("dialogue")))

    monkeypatch.setattr(w, "write_file", spy)
    assert verbs(app, w) == ["WriteMarker:green", "SwitchRoute:blue", "WriteMarker:blue"]
    assert converge(app, w, tmp_path) == "converged"
    assert markers == [("green\n", ["127.0.0.1:18082"]), ("blue\n", ["127.0.0.1:18081"])]
    assert w.routed("dialogue") == ["127.0.0.1:18081"] and w.files[app.marker_path] == "blue\n"


def test_marker_killed_before_it_was_written_is_fixed_before_a_failing_deploy_onto_the_live_color(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect #13 of the combined machine: a kill -9 between a switch to green and its marker, green exits, then a
    deploy onto green that never gets healthy. The marker is corrected first, so the failed wait leaves it right."""
    v1 = make_app()
    w = world_for(v1)
    assert converge(v1, w, tmp_path) == "converged"
    write_file = w.write_file
    markers: list[tuple[str, list[str]]] = []  # every marker write, with what Nginx served at that moment

    def killed_at_the_marker(path: Path, content: str, mode: int = 0o644) -> None:
        if path == v1.marker_path:
            raise Crash("kill -9 between the switch and its marker")
        write_file(path, content, mode)

    monkeypatch.setattr(w, "write_file", killed_at_the_marker)
    with pytest.raises(Crash):
        reconciler(w, tmp_path / "state").reconcile(make_app(image="dialogue:2", activeColor="green"))
    assert w.routed("dialogue") == ["127.0.0.1:18082"] and w.files[v1.marker_path] == "blue\n"  # the kill's leftover

    def spy(path: Path, content: str, mode: int = 0o644) -> None:
        write_file(path, content, mode)
        if path == v1.marker_path:
            markers.append((content, w.routed("dialogue")))

    monkeypatch.setattr(w, "write_file", spy)
    w.stop_container("dialogue-green", 1)  # green exits
    bad = make_app(image="dialogue:bad", activeColor="green")
    assert verbs(bad, w)[0] == "WriteMarker:green"  # before the create and the wait that fails
    assert "WaitHealthy:green" in verbs(bad, w)
    assert converge(bad, w, tmp_path) != "converged"
    assert markers == [("green\n", ["127.0.0.1:18082"])]
    assert w.files[v1.marker_path] == "green\n"


def test_a_wrong_marker_is_corrected_while_dependson_holds_a_new_color_back(tmp_path: Path) -> None:
    """A dependency not ready holds the deploy back, never the marker's correction to what Nginx serves now."""
    app, w = _converged_v1(tmp_path)
    w.files[app.marker_path] = "green\n"
    p = plan_for(make_app(image="dialogue:2", activeColor="green", dependsOn=["redis"]), w, not_ready={"redis": "exited"})
    assert [f"{a.verb}:{a.color}" for a in p.actions] == ["WriteMarker:blue"]
    assert [b.reason for b in p.blockers] == ["DependencyNotReady"]


def test_a_flag_file_that_is_not_ours_is_rewritten_without_a_reload(tmp_path: Path) -> None:
    """Green serves through a hand-made (empty) flag file: the pass makes it the controller's own, no reload."""
    app = make_app(activeColor="green")
    w = world_for(app)
    assert converge(app, w, tmp_path) == "converged" and w.files[app.flag_file] == "green\n"
    w.files[app.flag_file] = ""  # what `touch` leaves; a read of a FIFO or a link also gives no content
    assert verbs(app, w) == ["SwitchRoute:green"]
    before = len(w.mutations)
    assert converge(app, w, tmp_path) == "converged"
    assert w.files[app.flag_file] == "green\n" and "reload" not in w.mutations[before:]
    assert verbs(app, w) == []
