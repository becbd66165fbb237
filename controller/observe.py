"""Observation: turn the host into facts. Reads only; the same code serves --plan, --status and --once."""

from __future__ import annotations

from dataclasses import replace

from controller.facts import ContainerFact, Observed
from controller.routing import route_fact, route_probe_url
from controller.spec import COLORS, BlueGreenApp, Color
from controller.world import World


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
    route = route_fact(app, world.probe_route(route_probe_url(app), hc.requestTimeoutSeconds))
    return Observed(
        app=app.name,
        containers=facts,
        include=world.read_file(app.upstream_file),
        route=route,
        marker=world.read_file(app.marker_path),
        at=world.now(),
        flag=world.read_file(app.flag_file) if app.spec.nginx.switch == "flag" else None,
    )
