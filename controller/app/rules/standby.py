"""The idle color: kept for rollback (`standby: keep`), or stopped once traffic has left it (`standby: stop`). Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from controller.app.rules.switchback import standby_may_stop
from controller.spec.base import Color, other
from controller.world.actions import StopContainer
from controller.world.facts import Memory, Observed

if TYPE_CHECKING:  # the models load with the first spec validated (none on a spec-cache hit)
    from controller.spec.app import BlueGreenApp


@dataclass(frozen=True)
class Standby:
    stop: StopContainer | None = None
    diff: str | None = None


def standby(app: BlueGreenApp, obs: Observed, mem: Memory, target: Color | None, rev: str, foreign: frozenset[Color]) -> Standby:
    spec = app.spec
    want = spec.activeColor
    idle = other(want)
    c = obs.containers[idle]
    if (
        spec.standby == "stop" and target == want and c is not None and c.running and idle not in foreign
        and standby_may_stop(app, mem, obs.serving, rev) and spec.preview is None
    ):
        return Standby(
            StopContainer(idle, f"standby: stop; drain up to {spec.drainSeconds:g}s first"),
            f"container {app.container_name(idle)}: running; standby: stop",
        )
    return Standby()
