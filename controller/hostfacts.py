"""Observing the host's capacity (issue 14), only when a plan would start a new color.

A pass that starts nothing (the no-op pass, a switch, a rollback onto a running color) asks the host nothing
more; one that would create or start a color that does not serve observes `CapacityFact` once and plans again
with it, so the rule (`capacity.capacity_blocker`, pure) decides on figures read just before the start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from controller.capacity import new_color
from controller.facts import CapacityFact, Observed
from controller.planner import Plan
from controller.world import World

if TYPE_CHECKING:  # the models load with the first spec validated (none on a spec-cache hit)
    from controller.spec import BlueGreenApp


def observe_capacity(app: BlueGreenApp, world: World, obs: Observed, p: Plan) -> CapacityFact:
    live = obs.containers.get(p.serving) if p.serving is not None else None
    # The live color (its usage stands in for a missing limit) and the wanted color's current container
    # (removed before the new one starts: what it uses comes free).
    wanted = obs.containers.get(app.spec.activeColor)
    measure = tuple(c.name for c in (live, wanted) if c is not None and c.running)
    return world.host_capacity(app.spec.image, measure, live.image_id if live is not None and live.image_id else None)


def with_capacity(
    app: BlueGreenApp, world: World, obs: Observed, p: Plan, replan: Callable[[Observed], Plan]
) -> tuple[Plan, Observed]:
    """`p` as it is when it starts no new color (or the override is set); else re-planned with the host's figures."""
    if obs.capacity is not None or new_color(app, p.actions, p.serving) is None:
        return p, obs
    obs = replace(obs, capacity=observe_capacity(app, world, obs, p))
    return replan(obs), obs
