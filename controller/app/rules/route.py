"""Where traffic goes: the Nginx side (include, flag, reload) and the marker. Pure.

Safety rule 3: the marker names the color Nginx really serves, never what we hoped it serves: before a switch
and after it. A wrong marker is corrected first in the plan (`Route.first`, placed by controller/app/decide.py
ahead of every other step), a switch's marker right after the switch (`Route.then`). A route that cannot be confirmed switches nothing and leaves the marker alone (`RouteUnverified`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from controller.app.plan import describe_file
from controller.app.routing import flag_color, flag_says, render_include
from controller.spec.base import Color
from controller.world.actions import Action, Blocker, SwitchRoute, WriteMarker
from controller.world.facts import Observed

if TYPE_CHECKING:  # the models load with the first spec validated (none on a spec-cache hit)
    from controller.spec.app import BlueGreenApp


@dataclass(frozen=True)
class Route:
    """The route's steps around the plan's others: `first` before every one of them, `then` after them."""

    target: Color | None  # None when what Nginx serves cannot be confirmed (or the target is not ours)
    first: tuple[Action, ...] = ()
    then: tuple[Action, ...] = ()
    blockers: tuple[Blocker, ...] = ()
    diffs: tuple[str, ...] = ()


def route(app: BlueGreenApp, obs: Observed, target: Color | None) -> Route:
    then: list[Action] = []
    blockers: list[Blocker] = []
    diffs: list[str] = []
    if target is not None:
        desired_include = render_include(app, target)
        if obs.include != desired_include:
            diffs.append(f"upstream include {app.upstream_file}: {'missing' if obs.include is None else 'differs'}; want route to {target}")
            then.append(SwitchRoute(target, f"write {app.upstream_file} for {target}, test, reload, confirm"))
        elif app.spec.nginx.switch == "flag" and not flag_says(obs.flag, target):
            # The flag is state like the include: wrong (deploy, rollback, hand edit) means switch it.
            # No reload when Nginx already follows the files (it serves what the flag said until now).
            follows = obs.route.reachable and obs.route.color == flag_color(obs.flag)
            verb = "create" if target == "green" else "remove"
            shown = "missing" if obs.flag is None else "present" if flag_says(obs.flag, "green") else describe_file(obs.flag)
            diffs.append(f"flag {app.flag_file}: {shown}; want route to {target}")
            then.append(
                SwitchRoute(target, f"{verb} {app.flag_file}{'' if follows else ', test, reload'}, confirm", write_include=False, reload=not follows)
            )
        elif obs.route.reachable and obs.route.color != target:
            diffs.append(f"nginx routes to {obs.route.color or obs.route.upstream or 'nothing'}; want {target}")
            then.append(SwitchRoute(target, "include is right but not live: test, reload, confirm", write_include=False))
        elif not obs.route.reachable:
            blockers.append(
                Blocker("RouteUnverified", f"cannot confirm which color Nginx serves: {obs.route.detail}; is Nginx running with the control server?")
            )
            target = None  # unknown: the marker stays as it is

    # The marker names what Nginx serves at every moment: one that disagrees with the color Nginx answered
    # through is fixed first, before any step that can fail (a wait, a create, a hook), whether or not a switch
    # is still to come (a switch rewrites it right after). Else a failed step stops the pass with the marker
    # wrong: a kill -9 between a switch and its marker, then a deploy onto that live color that never gets healthy.
    # Always safe: it writes what Nginx serves now, and nothing before the switch changes that.
    first: tuple[Action, ...] = ()
    live = obs.route.color if obs.route.reachable else None
    marker = obs.marker_color  # what the marker will say when the step below runs
    if live is not None and marker != live:
        diffs.append(f"marker {app.marker_path}: {describe_file(obs.marker)}; Nginx serves {live}")
        first = (WriteMarker(live, f"Nginx serves {live}" + ("" if live == target else " until the switch")),)
        marker = live

    if target is not None and marker != target:
        diffs.append(f"marker {app.marker_path}: {describe_file(obs.marker)}; want {target}")
        then.append(WriteMarker(target, f"Nginx serves {target}"))
    return Route(target, first, tuple(then), tuple(blockers), tuple(diffs))
