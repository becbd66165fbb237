"""What the Nginx side should look like for an app, and how to read what it does: pure functions."""

from __future__ import annotations

from controller.facts import RouteFact, color_of_port, include_servers, port_of
from controller.spec import COLORS, BlueGreenApp, Color
from controller.world import RouteProbe

HEADER = "# Managed by bluegreen-controller: hand edits are reverted on the next pass."


def upstream_address(app: BlueGreenApp, color: Color) -> str:
    host = app.spec.bindAddress
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{app.spec.ports.of(color)}"


def render_include(app: BlueGreenApp, color: Color) -> str:
    """The upstream include routing `app` to `color` (http context)."""
    return (
        f"{HEADER}\n"
        f"# app={app.name} color={color}\n"
        f"upstream {app.name} {{\n"
        f"    server {upstream_address(app, color)};\n"
        f"    keepalive 16;\n"
        f"}}\n"
    )


def color_ports(app: BlueGreenApp) -> dict[Color, int]:
    return {c: app.spec.ports.of(c) for c in COLORS}


def include_color(app: BlueGreenApp, content: str | None) -> Color | None:
    """The color an include routes to, read from its server line (not its comment): None if ambiguous."""
    servers = include_servers(content)
    colors = {color_of_port(port_of(s), color_ports(app)) for s in servers}
    if len(colors) != 1:
        return None
    return colors.pop()


def route_probe_url(app: BlueGreenApp) -> str:
    return f"{app.spec.nginx.controlUrl.rstrip('/')}/bluegreen/{app.name}{app.spec.healthCheck.path}"


def route_fact(app: BlueGreenApp, probe: RouteProbe) -> RouteFact:
    if not probe.reachable:
        return RouteFact(reachable=False, detail=probe.detail)
    # After a retry Nginx lists every server tried ("a:1, b:2"); the last one answered.
    last = probe.upstream.split(",")[-1].strip() if probe.upstream else ""
    color = color_of_port(port_of(last), color_ports(app))
    return RouteFact(reachable=True, color=color, upstream=probe.upstream, detail=probe.detail)


def health_url(app: BlueGreenApp, color: Color) -> str:
    return f"http://{upstream_address(app, color)}{app.spec.healthCheck.path}"
