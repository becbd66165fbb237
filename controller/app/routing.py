"""What the Nginx side should look like for an app, and how to read what it does: pure functions."""

from __future__ import annotations

from typing import TYPE_CHECKING

from controller.spec.base import COLORS, Color
from controller.world.facts import RouteFact, color_of_port, include_servers, port_of
from controller.world.protocol import RouteProbe

if TYPE_CHECKING:  # the models load with the first spec validated (none on a spec-cache hit)
    from controller.spec.app import BlueGreenApp

HEADER = "# Managed by bluegreen-controller: hand edits are reverted on the next pass."


def upstream_address(app: BlueGreenApp, color: Color) -> str:
    host = app.spec.bindAddress
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{app.spec.ports.of(color)}"


def _upstream(name: str, address: str) -> str:
    # keepalive_timeout: idle pooled connections to a color that no longer serves close soon, so a drain
    # (which counts connections to the color's port) ends early instead of waiting for nginx's 60 s default.
    return f"upstream {name} {{\n    server {address};\n    keepalive 16;\n    keepalive_timeout 5s;\n}}\n"


def render_include(app: BlueGreenApp, color: Color) -> str:
    """The upstream include of `app` (http context).

    reload: `<app>`, `<app>-blue` and `<app>-green` all name the live `color` (the flag-aware site of nginx/ and a
    plain `proxy_pass http://<app>` site both follow it after a reload).
    flag: `<app>-blue` and `<app>-green` each name their own color, whatever `color` is; the site picks one per
    request by testing the flag file, so a switch needs no reload. No `<app>` block: a site that is not flag-aware
    then fails `nginx -t` or the route check instead of silently serving a stale color.
    """
    if app.spec.nginx.switch == "flag":
        return (
            f"{HEADER}\n"
            f"# app={app.name} switch=flag: {app.flag_file} present = green serves, absent = blue\n"
            + "".join(_upstream(f"{app.name}-{c}", upstream_address(app, c)) for c in COLORS)
        )
    return (
        f"{HEADER}\n"
        f"# app={app.name} color={color}\n"
        + "".join(_upstream(n, upstream_address(app, color)) for n in (app.name, f"{app.name}-blue", f"{app.name}-green"))
    )


FLAG_CONTENT = "green\n"  # what the controller writes; the site only tests that the file exists


def flag_color(flag: str | None) -> Color:
    """What the flag-aware site serves: green while the flag file exists, blue otherwise."""
    return "green" if flag is not None else "blue"


def flag_says(flag: str | None, color: Color) -> bool:
    """The flag file is exactly what the controller writes for `color`: absent for blue, our one line for green.
    Anything else there (a FIFO, a directory, a link, a hand-made file) is rewritten: nginx's `-f` may not see it
    the way a read does."""
    return flag is None if color == "blue" else flag == FLAG_CONTENT


def configured_color(app: BlueGreenApp, include: str | None, flag: str | None) -> Color | None:
    """The color the files on disk route to once loaded (None if they do not say one color)."""
    if app.spec.nginx.switch == "flag":
        return flag_color(flag) if include == render_include(app, "blue") else None
    return include_color(app, include)


def serving_color(app: BlueGreenApp, route: RouteFact, include: str | None, flag: str | None) -> Color | None:
    """The color live now: what Nginx answered through, else what the files on disk route to."""
    return route.color if route.reachable else configured_color(app, include, flag)


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
    return RouteFact(reachable=True, color=color, upstream=probe.upstream, detail=probe.detail, status=probe.status)


def health_url(app: BlueGreenApp, color: Color) -> str:
    return f"http://{upstream_address(app, color)}{app.spec.healthCheck.path}"
