"""The planner's secrets rule, pure: observations built by hand, no world, no I/O.

The serving color keeps its own recorded fingerprint when that is its only difference from the spec
(replacing it would drop traffic), and the plan says why its secrets are stale.
"""

from __future__ import annotations

import pytest

from controller.app.plan import Plan
from controller.app.routing import render_include
from controller.spec.app import BlueGreenApp, Color
from controller.world.actions import CreateContainer
from controller.world.facts import (
    FINGERPRINT_KEY,
    LABEL_APP,
    LABEL_FINGERPRINT,
    LABEL_MANAGED,
    LABEL_REVISION,
    MANAGED_BY,
    ContainerFact,
    Observed,
    RouteFact,
)
from tests.factories import make_app
from tests.support.plans import decide_on

OLD, NEW = "a" * 16, "b" * 16
NOW = 1_000_000.0


def _live(app: BlueGreenApp, color: Color, fp: str | None, *, running: bool = True) -> ContainerFact:
    """A container as the controller would have created it with secrets fingerprint `fp` (None: no secrets)."""
    extra = {FINGERPRINT_KEY: fp} if fp else {}
    labels = {
        LABEL_APP: app.name,
        LABEL_MANAGED: MANAGED_BY,
        LABEL_REVISION: app.revision(color, extra),
        **({LABEL_FINGERPRINT: fp} if fp else {}),
    }
    return ContainerFact(
        name=app.container_name(color),
        id=f"id-{color}",
        image=app.spec.image,
        image_id="sha256:" + "c" * 64,
        labels=labels,
        state="running" if running else "exited",
        host_ip="127.0.0.1",
        host_port=app.spec.ports.of(color),
        healthy=True if running else None,
        started_at=NOW - 100 if running else None,
        restart_count=0 if running else None,  # running 100 s without a restart: steady (rule 1)
    )


def _observed(
    app: BlueGreenApp, blue: ContainerFact | None, *, route: Color | None = "blue", include: Color = "blue", green: ContainerFact | None = None
) -> Observed:
    return Observed(
        app=app.name,
        containers={"blue": blue, "green": green},
        include=render_include(app, "blue"),
        route=RouteFact(reachable=route is not None, color=route, detail="" if route else "control server down"),
        marker=f"{include}\n",
        at=NOW,
        flag=None if include == "blue" else "on\n",
        serving=route if route is not None else "blue",  # what Nginx answers, else what the include routes to
    )


def _plan(app: BlueGreenApp, obs: Observed, fp: str | None) -> Plan:
    return decide_on(app, obs, now=NOW, revision_extra={FINGERPRINT_KEY: fp} if fp else None)


def test_rotated_secret_alone_holds_the_serving_color_and_reports_it() -> None:
    app = make_app()
    live = _live(app, "blue", OLD)
    p = _plan(app, _observed(app, live), NEW)
    assert p.actions == () and p.blockers == () and p.converged
    assert p.revisions["blue"] == live.revision and p.revision_extra == {FINGERPRINT_KEY: OLD}
    assert p.secrets_stale == (
        f"dialogue-blue serves with secrets fingerprint {OLD}, the spec now resolves fingerprint {NEW}; "
        "it is not restarted while live: set activeColor: green to deploy them"
    )


def test_current_fingerprint_is_not_stale() -> None:
    app = make_app()
    p = _plan(app, _observed(app, _live(app, "blue", NEW)), NEW)
    assert p.converged and p.secrets_stale is None and p.revision_extra == {FINGERPRINT_KEY: NEW}


def test_secrets_added_to_an_app_whose_live_color_has_none_are_stale_not_a_restart() -> None:
    app = make_app()
    p = _plan(app, _observed(app, _live(app, "blue", None)), NEW)
    assert p.converged and p.revision_extra == {}
    assert p.secrets_stale is not None and "serves with secrets no secrets" in p.secrets_stale
    assert f"now resolves fingerprint {NEW}" in p.secrets_stale


def test_secrets_removed_from_the_spec_are_stale_too() -> None:
    app = make_app()
    p = _plan(app, _observed(app, _live(app, "blue", OLD)), None)
    assert p.converged and p.revision_extra == {FINGERPRINT_KEY: OLD}  # held to its own label
    assert p.secrets_stale is not None and "the spec now resolves no secrets" in p.secrets_stale


def test_another_difference_is_still_refused_and_the_secrets_are_stale_as_well() -> None:
    old = make_app()
    live = _live(old, "blue", OLD)
    app = make_app(image="dialogue:2")
    p = _plan(app, _observed(app, live), NEW)
    assert [b.reason for b in p.blockers] == ["LiveColorOutdated"] and p.actions == ()
    # Not held: the wanted revision is the one with the current secrets, which a flip deploys.
    assert p.revision_extra == {FINGERPRINT_KEY: NEW} and p.revisions["blue"] == app.revision("blue", {FINGERPRINT_KEY: NEW})
    assert p.secrets_stale is not None and f"fingerprint {OLD}" in p.secrets_stale


@pytest.mark.parametrize("case", ["stopped", "not-serving"])
def test_a_color_that_does_not_serve_is_recreated_with_the_current_secrets(case: str) -> None:
    app = make_app()
    if case == "stopped":
        obs = _observed(app, _live(app, "blue", OLD, running=False))
    else:  # Nginx routes to green: blue is idle, nothing to protect
        obs = _observed(app, _live(app, "blue", OLD), route="green", include="green", green=_live(app, "green", OLD))
    p = _plan(app, obs, NEW)
    creates = [a for a in p.actions if isinstance(a, CreateContainer)]
    assert [a.color for a in creates] == ["blue"] and creates[0].revision == app.revision("blue", {FINGERPRINT_KEY: NEW})
    assert p.revision_extra == {FINGERPRINT_KEY: NEW} and p.secrets_stale is None


def test_the_rule_follows_the_include_when_nginx_cannot_be_asked() -> None:
    """Serving is the planner's own answer: with the control server down, the files on disk say blue."""
    app = make_app()
    live = _live(app, "blue", OLD)
    p = _plan(app, _observed(app, live, route=None), NEW)
    assert p.revisions["blue"] == live.revision and p.secrets_stale is not None
    assert not any(isinstance(a, CreateContainer) for a in p.actions)
