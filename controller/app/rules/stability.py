"""Rule 1 for a color that does not serve and is to get traffic without a deploy (failover, the switch back of a
failed verification): it must be steady now (run `stableSeconds` without a restart, as inspection shows), or the
pass waits out a full stability window on it first (`WaitHealthy`, which fails if Docker restarts it). Pure."""

from __future__ import annotations

from typing import TYPE_CHECKING

from controller.spec.base import Color
from controller.world.actions import Action, WaitHealthy

if TYPE_CHECKING:  # the models load with the first spec validated (none on a spec-cache hit)
    from controller.spec.app import BlueGreenApp


def prove_window(app: BlueGreenApp, color: Color, steady: bool, before: str) -> tuple[Action, ...]:
    """Nothing when `color` is steady; else a full window waited on it `before` traffic moves (e.g. "the failover")."""
    if steady:
        return ()
    return (
        WaitHealthy(
            color,
            f"{app.container_name(color)} passes but has not run {app.spec.healthCheck.stableSeconds:g}s "
            f"without a restart: it must keep passing for a full window before {before}",
        ),
    )
