"""Maintenance: the names its parts share (its probe route and what it answers, its condition, the cleanup a failed
pass still applies). Pure.

The rule (when the site is in maintenance, where the steps go in a plan): controller/app/rules/maintenance.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from controller.world.actions import Action, SwitchMaintenance
from controller.world.facts import RouteFact

if TYPE_CHECKING:  # the models load with the first spec validated (none on a spec-cache hit)
    from controller.spec.app import BlueGreenApp

ON_STATUS, OFF_STATUS = 503, 204  # what the control route answers


def maintenance_probe_url(app: BlueGreenApp) -> str:
    """The control server's maintenance route: 503 while the site answers with the maintenance page, 204 otherwise."""
    return f"{app.spec.nginx.controlUrl.rstrip('/')}/bluegreen-maintenance/{app.name}"


def served(route: RouteFact | None) -> bool | None:
    """What the control route said: True in maintenance, False not, None unknown (not asked, unreachable, other)."""
    if route is None or not route.reachable:
        return None
    return {ON_STATUS: True, OFF_STATUS: False}.get(route.status)


@dataclass(frozen=True)
class MaintenanceState:
    """What the Maintenance condition says: `on` is what the site does (the flag on disk)."""

    on: bool  # the flag is on disk now (the plan may change it)
    reason: str  # Enabled, Migration, Ending (on, not wanted: turned off by this plan), Off
    message: str


def cleanup_after_failure(actions: tuple[Action, ...]) -> tuple[Action, ...]:
    """The steps a plan made after a failed pass may still take: its leading "maintenance off" steps (the rule's
    rule 3: a failed hook or check returns service to the old color in the same run)."""
    out: list[Action] = []
    for a in actions:
        if not (isinstance(a, SwitchMaintenance) and not a.on and not a.wrap):
            break
        out.append(a)
    return tuple(out)
