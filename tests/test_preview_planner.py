"""spec.preview against the in-memory world: the preview rules of controller/app/preview.py (issue 12 item 1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from controller.app.decide import decide
from controller.app.reconcile import Reconciler
from controller.app.status import conditions
from controller.spec.app import BlueGreenApp, preview_app
from controller.store.state import StateStore
from controller.world.facts import Memory
from controller.world.fake import FakeImage
from tests.factories import make_app
from tests.fakes import CheckedWorld, reconciler, world_for
from tests.support.plans import inputs_for, plan_for

IMAGES = {"dialogue:1": FakeImage(), "dialogue:2": FakeImage(), "dialogue:3": FakeImage(), "dialogue:bad": FakeImage("never")}
BLUE, GREEN = "127.0.0.1:18081", "127.0.0.1:18082"


def verbs(app: BlueGreenApp, w: CheckedWorld, mem: Memory | None = None) -> list[str]:
    p = plan_for(app, w, mem or Memory())
    return [f"{a.verb}:{a.color}" for a in p.actions] + [f"!{b.reason}" for b in p.blockers]


def converge(app: BlueGreenApp, w: CheckedWorld, state: Path) -> str:
    r = reconciler(w, state).reconcile(app)
    assert w.violations == []
    return r.result


def live(**kw: Any) -> BlueGreenApp:
    return make_app(**{"healthCheck": {"stableSeconds": 1}, **kw})


def previewing(image: str = "dialogue:2", **kw: Any) -> BlueGreenApp:
    return live(preview={"image": image, **kw})


@pytest.fixture
def w() -> CheckedWorld:
    world = world_for(live(), images=IMAGES)
    world.stable_seconds = 1
    return world


def test_preview_runs_on_the_idle_color_and_opens_its_route_only_when_proven(w: CheckedWorld, tmp_path: Path) -> None:
    converge(live(), w, tmp_path)
    app = previewing(env={"FEATURE": "on"})
    assert verbs(app, w) == ["CreatePreview:green", "WaitPreview:green", "SwitchPreview:green"]
    blue_id = w.containers["dialogue-blue"].fact.id
    assert converge(app, w, tmp_path) == "converged"
    assert w.routed("dialogue") == [BLUE]  # everyone else: the live color
    assert w.preview_routed("dialogue") == [GREEN]
    green = w.containers["dialogue-green"]
    assert green.fact.image == "dialogue:2" and green.env["FEATURE"] == "on"
    assert w.containers["dialogue-blue"].fact.id == blue_id  # the live color untouched
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert {(h["action"], h["image"]) for h in history if h["action"].endswith("Preview")} == {
        ("CreatePreview", "dialogue:2"), ("WaitPreview", "dialogue:2"), ("SwitchPreview", "dialogue:2")
    }
    w.mutations.clear()
    assert verbs(app, w) == [] and converge(app, w, tmp_path) == "converged" and w.mutations == []


def test_preview_waits_while_a_deploy_is_in_progress(w: CheckedWorld, tmp_path: Path) -> None:
    converge(live(), w, tmp_path)
    # A deploy to green and a preview at once: green is deployed first; the preview then takes the idle blue,
    # never while blue still serves.
    app = live(image="dialogue:3", activeColor="green", preview={"image": "dialogue:2"})
    assert verbs(app, w) == ["CreateContainer:green", "WaitHealthy:green", "SwitchRoute:green", "WriteMarker:green"]
    assert converge(app, w, tmp_path) == "converged"
    assert w.routed("dialogue") == [GREEN] and w.preview_routed("dialogue") == [BLUE]
    assert w.containers["dialogue-blue"].fact.image == "dialogue:2"


def test_promotion_is_a_switch_only(w: CheckedWorld, tmp_path: Path) -> None:
    converge(live(), w, tmp_path)
    converge(previewing(), w, tmp_path)
    green_id = w.containers["dialogue-green"].fact.id
    promoted = live(image="dialogue:2", activeColor="green")
    assert preview_app(previewing()).revision("green") == promoted.revision("green")
    w.mutations.clear()
    # The preview flag goes first (preview requests must not land on the old color once it is idle), then the switch.
    assert verbs(promoted, w) == ["SwitchPreview:blue", "SwitchRoute:green", "WriteMarker:green"]
    assert converge(promoted, w, tmp_path) == "converged"
    assert w.containers["dialogue-green"].fact.id == green_id
    # No container created, removed, stopped or started (image pruning after a converged pass is housekeeping: it
    # removes only images no container uses and no recent release ran, issue 21).
    containers = [m for m in w.mutations if m.startswith(("create", "remove", "stop", "start")) and "/" not in m]
    assert all(m.startswith("remove image ") for m in containers), w.mutations
    assert w.routed("dialogue") == [GREEN] and w.preview_routed("dialogue") == [GREEN]


def test_promotion_with_preview_env_is_switch_only_only_when_the_env_is_carried_over(w: CheckedWorld, tmp_path: Path) -> None:
    converge(live(env={"A": "1"}), w, tmp_path)
    converge(live(env={"A": "1"}, preview={"image": "dialogue:2", "env": {"B": "2"}}), w, tmp_path)
    carried = live(image="dialogue:2", activeColor="green", env={"A": "1", "B": "2"})
    dropped = live(image="dialogue:2", activeColor="green", env={"A": "1"})
    assert verbs(carried, w) == ["SwitchPreview:blue", "SwitchRoute:green", "WriteMarker:green"]
    # Not the revision the preview runs: a deploy (recreate, health gate), never a switch to the wrong env.
    assert verbs(dropped, w)[:3] == ["SwitchPreview:blue", "RemoveContainer:green", "CreateContainer:green"]


def test_removing_the_preview_closes_its_route_and_leaves_a_plain_standby(w: CheckedWorld, tmp_path: Path) -> None:
    converge(live(), w, tmp_path)
    converge(previewing(), w, tmp_path)
    green_id = w.containers["dialogue-green"].fact.id
    assert verbs(live(), w) == ["SwitchPreview:blue"]
    assert converge(live(), w, tmp_path) == "converged"
    assert w.preview_routed("dialogue") == [BLUE]
    assert w.containers["dialogue-green"].fact.id == green_id  # not removed: the idle color as any standby
    assert verbs(live(), w) == []


def test_failing_preview_degrades_the_preview_only(w: CheckedWorld, tmp_path: Path) -> None:
    converge(live(), w, tmp_path)
    app = previewing("dialogue:bad")
    r = reconciler(w, tmp_path).reconcile(app)
    assert r.result == "converged", r.error  # the live color is what the spec wants
    assert w.routed("dialogue") == [BLUE] and w.preview_routed("dialogue") == [BLUE]
    assert r.status is not None
    conds = {c.type: c for c in r.status.conditions}
    assert conds["Ready"].status and not conds["Degraded"].status
    assert not conds["PreviewReady"].status and conds["PreviewReady"].reason == "PreviewFailed"
    assert not conds["RollbackReady"].status  # the idle color holds the (failed) preview, no standby
    # Backs off like a failed deploy: the next run does not wait the whole timeout again.
    t = w.clock
    assert converge(app, w, tmp_path) == "converged" and w.clock == t
    # A new preview image is tried at once.
    assert verbs(previewing("dialogue:3"), w)[:2] == ["RemovePreview:green", "CreatePreview:green"]


def test_preview_that_breaks_loses_its_route_first(w: CheckedWorld, tmp_path: Path) -> None:
    converge(live(), w, tmp_path)
    converge(previewing(), w, tmp_path)
    w.containers["dialogue-green"].broken = True
    acts = verbs(previewing(), w)
    assert acts[0] == "SwitchPreview:blue" and "WaitPreview:green" in acts
    assert converge(previewing(), w, tmp_path) == "converged"
    assert w.preview_routed("dialogue") == [BLUE]  # not routed to a broken preview
    assert w.routed("dialogue") == [BLUE]


def test_preview_keeps_the_idle_color_with_standby_stop(w: CheckedWorld, tmp_path: Path) -> None:
    converge(live(standby="stop"), w, tmp_path)
    app = live(standby="stop", preview={"image": "dialogue:2"})
    assert converge(app, w, tmp_path) == "converged"
    assert w.containers["dialogue-green"].fact.state == "running"
    assert "StopContainer:green" not in verbs(app, w)


def test_preview_route_not_confirmed_is_the_preview_failing(w: CheckedWorld, tmp_path: Path) -> None:
    # A site without the preview route (old templates): the flag changes nothing. The preview fails, traffic stays.
    converge(live(), w, tmp_path)
    w.preview_routed = w.routed  # type: ignore[method-assign]
    r = reconciler(w, tmp_path).reconcile(previewing())
    assert r.result == "converged", r.actions_done
    assert r.status is not None and w.routed("dialogue") == [BLUE]
    pr = next(c for c in r.status.conditions if c.type == "PreviewReady")
    assert not pr.status and "preview requests for dialogue reach" in pr.message


def test_conditions_without_a_preview_are_unchanged(w: CheckedWorld, tmp_path: Path) -> None:
    converge(live(), w, tmp_path)
    inputs = inputs_for(live(), w)
    obs, p = inputs.observed, decide(inputs)
    assert p.preview is None and obs.preview_route is None  # no extra probe for apps without a preview
    assert [c.type for c in conditions(live(), obs, p)] == ["Ready", "Progressing", "Degraded", "RollbackReady", "SecretsStale"]


def test_preview_that_does_not_fit_starts_nothing(w: CheckedWorld, tmp_path: Path) -> None:
    # spec.resources' capacity check holds for the preview's new container: short, it degrades the preview only.
    converge(live(resources={"memory": "1g"}), w, tmp_path)
    w.mem_available = 1024**3  # blue's memory aside, nothing is left for a second 1g color
    app = live(resources={"memory": "1g"}, preview={"image": "dialogue:2"})
    r = reconciler(w, tmp_path).reconcile(app)
    assert r.result == "converged" and "dialogue-green" not in w.containers
    assert r.status is not None
    pr = next(c for c in r.status.conditions if c.type == "PreviewReady")
    assert not pr.status and pr.reason == "InsufficientCapacity", pr


def test_preview_route_is_removed_even_while_a_dependency_is_down(w: CheckedWorld, tmp_path: Path) -> None:
    """Issue 19 #12: the preview exits while an accessory it depends on is down. The dependsOn gate holds the new
    color back, but never the removal of the preview route: preview requests go back to the live color at once."""
    app = live(dependsOn=["redis"], preview={"image": "dialogue:2"})
    converge(live(dependsOn=["redis"]), w, tmp_path)
    assert converge(app, w, tmp_path) == "converged" and w.preview_routed("dialogue") == [GREEN]
    w.kill("dialogue-green")
    p = plan_for(app, w, Memory(), not_ready={"redis": "exited"})
    assert [f"{a.verb}:{a.color}" for a in p.actions] == ["SwitchPreview:blue"], p.actions
    assert [b.reason for b in p.blockers] == ["DependencyNotReady"]
    # Reconciled: preview requests reach the live color, and the stopped preview is not started meanwhile.
    down = Reconciler(w, StateStore(tmp_path), dependencies=lambda a: {"redis": "exited"})
    assert down.reconcile(app).result == "degraded" and w.violations == []
    assert w.preview_routed("dialogue") == [BLUE] and w.containers["dialogue-green"].fact.state == "exited"
