"""Foreign containers: one under the app's names that the controller did not create is someone else's. Pure.

It is never removed, started, stopped or switched to; the operator has to decide (blocker ForeignContainer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from controller.spec.base import COLORS, Color
from controller.world.actions import Blocker
from controller.world.facts import LABEL_APP, LABEL_MANAGED, MANAGED_BY, Observed

if TYPE_CHECKING:  # the models load with the first spec validated (none on a spec-cache hit)
    from controller.spec.app import BlueGreenApp


@dataclass(frozen=True)
class Foreign:
    colors: frozenset[Color]  # colors whose container is not ours
    blockers: tuple[Blocker, ...] = ()


def foreign(app: BlueGreenApp, obs: Observed) -> Foreign:
    found = {c: f for c in COLORS if (f := obs.containers[c]) is not None and not f.ours(app.name)}
    return Foreign(
        frozenset(found),
        tuple(
            Blocker(
                "ForeignContainer",
                f"container {f.name} ({f.id[:12]}, image {f.image}) was not created by {MANAGED_BY} (labels "
                f"{LABEL_MANAGED}={MANAGED_BY} and {LABEL_APP}={app.name} missing): it is left alone and gets no "
                f"traffic; remove or rename it by hand to let the controller manage {c}",
            )
            for c, f in found.items()
        ),
    )
