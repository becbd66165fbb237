"""Observation: turn the host into facts. Reads only; the same code serves --plan, --status and --once."""

from __future__ import annotations

from dataclasses import replace

from controller.facts import ContainerFact, Observed, RouteFact
from controller.routing import configured_color, route_fact, route_probe_url
from controller.spec import COLORS, BlueGreenApp, Color
from controller.world import World

ROUTE_SETTLE_PROBES = 5  # x 0.1 s: longer than a reload takes to reach every worker


def index_containers(world: World) -> dict[str, ContainerFact]:
    """One Docker call for all apps of a pass."""
    return {c.name: c for c in world.list_containers()}


def observe(app: BlueGreenApp, world: World, containers: dict[str, ContainerFact]) -> Observed:
    facts: dict[Color, ContainerFact | None] = {}
    hc = app.spec.healthCheck
    for color in COLORS:
        c = containers.get(app.container_name(color))
        if c is not None and c.running:
            if c.host_port is None:
                c = replace(c, healthy=False, health_detail="no published port")
            else:
                host = c.host_ip if c.host_ip not in (None, "", "0.0.0.0", "::") else "127.0.0.1"
                host = f"[{host}]" if ":" in host else host
                result = world.probe_health(f"http://{host}:{c.host_port}{hc.path}", hc.expectStatus, hc.requestTimeoutSeconds)
                c = replace(c, healthy=result.ok, health_detail=result.detail)
                if not result.ok:
                    # Only a container that is not healthy needs its start time (for its health deadline).
                    c = replace(c, started_at=world.started_at(c.name))
        facts[color] = c
    include = world.read_file(app.upstream_file)
    flag = world.read_file(app.flag_file) if app.spec.nginx.switch == "flag" else None
    return Observed(
        app=app.name,
        containers=facts,
        include=include,
        route=_route(app, world, configured_color(app, include, flag)),
        marker=world.read_file(app.marker_path),
        at=world.now(),
        flag=flag,
    )


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
