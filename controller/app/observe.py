"""Observation: turn the host into facts. Reads only; the same code serves --plan, --status and --once."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from controller.app.maintenance import maintenance_probe_url
from controller.app.preview import preview_probe_url
from controller.app.routing import configured_color, route_fact, route_probe_url, serving_color
from controller.spec.base import COLORS, Color
from controller.world.facts import LABEL_HOOK, ContainerFact, Observed, RouteFact
from controller.world.protocol import RunState, World

if TYPE_CHECKING:  # the models load with the first spec validated (none on a spec-cache hit)
    from controller.spec.app import BlueGreenApp

ROUTE_SETTLE_PROBES = 5  # x 0.1 s: longer than a reload takes to reach every worker


def index_containers(world: World) -> dict[str, ContainerFact]:
    """One Docker call for all apps of a pass."""
    return {c.name: c for c in world.list_containers()}


def observe(app: BlueGreenApp, world: World, containers: dict[str, ContainerFact]) -> Observed:
    include = world.read_file(app.upstream_file)
    flag = world.read_file(app.flag_file) if app.spec.nginx.switch == "flag" else None
    route = _route(app, world, configured_color(app, include, flag))
    serving = serving_color(app, route, include, flag)  # computed once: Observed.serving
    facts: dict[Color, ContainerFact | None] = {}
    hc = app.spec.healthCheck
    for color in COLORS:
        c = containers.get(app.container_name(color))
        if c is not None and c.state == "restarting":
            c = replace(c, restarting=True)
        if c is not None and c.running:
            if c.host_port is None:
                c = replace(c, healthy=False, health_detail="no published port")
            else:
                host = c.host_ip if c.host_ip not in (None, "", "0.0.0.0", "::") else "127.0.0.1"
                host = f"[{host}]" if ":" in host else host
                result = world.probe_health(f"http://{host}:{c.host_port}{hc.path}", hc.expectStatus, hc.requestTimeoutSeconds)
                c = replace(c, healthy=result.ok, health_detail=result.detail)
                # One inspect, only where it matters: a failing container needs its start time (health deadline);
                # a passing one that may get traffic and does not serve yet must show it is no crash loop.
                # With spec.failover or spec.verify the color that does not serve may get traffic too (a failover,
                # a switch back: rules/stability.py). (A preview on the idle color is proven the same way before
                # preview requests reach it.)
                if not result.ok or (color == app.spec.activeColor and serving != color) or (
                    (app.spec.failover != "none" or app.spec.verify is not None) and serving is not None and serving != color
                ) or (
                    app.spec.preview is not None and color != app.spec.activeColor
                ):
                    c = _with_run_state(c, world.run_state(c.name))
        facts[color] = c
    preview_flag, preview_route = _preview(app, world)
    maintenance_flag, maintenance_route = _maintenance(app, world)
    return Observed(
        app=app.name,
        containers=facts,
        include=include,
        route=route,
        marker=world.read_file(app.marker_path),
        at=world.now(),
        flag=flag,
        preview_flag=preview_flag,
        preview_route=preview_route,
        maintenance_flag=maintenance_flag,
        maintenance_route=maintenance_route,
        hooks=_hook_containers(app, containers),
        serving=serving,
    )


def _preview(app: BlueGreenApp, world: World) -> tuple[str | None, RouteFact | None]:
    """spec.preview: the preview flag, and where a request that asks for the preview goes (controller/app/preview.py)."""
    if app.spec.nginx.switch != "flag":
        return None, None
    flag = world.read_file(app.preview_flag_file)
    if app.spec.preview is None and flag is None:
        return None, None  # nothing to confirm: no extra request per pass for apps without a preview
    return flag, route_fact(app, world.probe_route(preview_probe_url(app), app.spec.healthCheck.requestTimeoutSeconds))


def _maintenance(app: BlueGreenApp, world: World) -> tuple[str | None, RouteFact | None]:
    """The maintenance flag, and what the control server's maintenance route answers (asked only while the flag
    exists: no extra request per pass otherwise; controller/app/maintenance.py)."""
    if app.spec.nginx.switch != "flag":
        return None, None
    flag = world.read_file(app.maintenance_flag_file)
    if flag is None:
        return None, None
    return flag, route_fact(app, world.probe_route(maintenance_probe_url(app), app.spec.healthCheck.requestTimeoutSeconds))


def _hook_containers(app: BlueGreenApp, containers: dict[str, ContainerFact]) -> tuple[ContainerFact, ...]:
    """This app's hook containers (controller/app/steps/gates.py), from the same listing: no extra Docker call."""
    return tuple(
        c for c in containers.values()
        if c.ours(app.name) and LABEL_HOOK in c.labels
    )  # fmt: skip


def _with_run_state(c: ContainerFact, rs: RunState | None) -> ContainerFact:
    if rs is None:  # removed between the listing and the inspect
        return replace(c, started_at=None, restart_count=None)
    # Exited between the listing and the inspect: its count says nothing about a run that has ended (unknown).
    count = rs.restart_count if rs.running else None
    return replace(c, started_at=rs.started_at, restart_count=count, restarting=rs.restarting, uptime=rs.uptime)


def _route(app: BlueGreenApp, world: World, configured: Color | None) -> RouteFact:
    """Ask Nginx which color answers. A reload reaches all workers ~120 ms after it returns, and an old
    worker can still take a request meanwhile (another app's reload, a reload by hand): when the answer
    disagrees with the files, ask again for a moment before reporting drift, so one stale worker does not
    cause a needless reload."""
    url, timeout = route_probe_url(app), app.spec.healthCheck.requestTimeoutSeconds
    fact = route_fact(app, world.probe_route(url, timeout))
    for _ in range(ROUTE_SETTLE_PROBES):
        if not fact.reachable or configured is None or fact.color == configured:
            break
        world.sleep(0.1)
        fact = route_fact(app, world.probe_route(url, timeout))
    return fact
