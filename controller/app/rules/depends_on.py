"""An app's `dependsOn` (issue 13): a new color does not start while an accessory it depends on is not healthy.

Pure: `depends_on` takes the plan's actions and the dependencies gathered not ready, and keeps only what concerns
the live color (healing it: create/start/wait of the color that serves), the removal of a route (the preview
flag off: requests that asked for a preview go back to the live color) and maintenance not tied to a migration
(spec.maintenance, or a leftover turned off). Everything that would start, switch to,
or stop for a new color is held back behind the blocker DependencyNotReady; the live color is never stopped
or moved because of a dependency, and a route to a color that is no longer proven never stays for one.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.spec.base import Color
from controller.world.actions import (
    Action,
    Blocker,
    CreateContainer,
    RemoveContainer,
    StartContainer,
    SwitchMaintenance,
    SwitchPreview,
    WaitHealthy,
)


@dataclass(frozen=True)
class Held:
    """What is left of the actions, and why the rest waits."""

    actions: tuple[Action, ...]
    blocker: Blocker


def depends_on(actions: tuple[Action, ...], serving: Color | None, not_ready: dict[str, str]) -> Held | None:
    """None when nothing is held back (every dependency ready, or only the live color is healed)."""
    if not not_ready or not actions:
        return None
    new_color = any(isinstance(a, (CreateContainer, StartContainer, RemoveContainer)) and a.color != serving for a in actions)
    if not new_color:
        return None  # only the live color is healed (or the route fixed): a dependency never holds that back
    kept = tuple(
        a for a in actions
        if _heals_live(a, serving) or _removes_route(a)
        or (isinstance(a, SwitchMaintenance) and not a.wrap)  # spec.maintenance, or a leftover turned off: not the new color's
    )  # fmt: skip
    why = "; ".join(f"{name}: {detail}" for name, detail in sorted(not_ready.items()))
    keeps = f"{serving} keeps serving" if serving is not None else "nothing serves yet"
    return Held(kept, Blocker("DependencyNotReady", f"dependsOn not healthy ({why}): the new color waits; {keeps}"))


def _heals_live(a: Action, serving: Color | None) -> bool:
    return serving is not None and a.color == serving and isinstance(a, (CreateContainer, StartContainer, WaitHealthy))


def _removes_route(a: Action) -> bool:
    """A route taken away (the preview flag off) only ever sends requests back to the live color: it always passes.
    (A migration's maintenance off is not one: it ends the maintenance its held switch needs.)"""
    return isinstance(a, SwitchPreview) and not a.on
