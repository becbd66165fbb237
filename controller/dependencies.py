"""An app's `dependsOn` (issue 13): a new color does not start while an accessory it depends on is not healthy.

Pure: `gate` takes the app's plan and the dependencies observed not ready, and keeps only what concerns the
live color (healing it: create/start/wait of the color that serves). Everything that would start, switch to,
or stop for a new color is held back behind the blocker DependencyNotReady; the live color is never stopped
or moved because of a dependency.
"""

from __future__ import annotations

from dataclasses import replace

from controller.actions import (
    Blocker,
    CreateContainer,
    RemoveContainer,
    StartContainer,
    SwitchMaintenance,
    WaitHealthy,
)
from controller.planner import Plan


def gate(p: Plan, not_ready: dict[str, str]) -> Plan:
    if not not_ready or not p.actions:
        return p
    live = p.serving
    new_color = any(isinstance(a, (CreateContainer, StartContainer, RemoveContainer)) and a.color != live for a in p.actions)
    if not new_color:
        return p  # only the live color is healed (or the route fixed): a dependency never holds that back
    kept = tuple(
        a for a in p.actions
        if (live is not None and a.color == live and isinstance(a, (CreateContainer, StartContainer, WaitHealthy)))
        or (isinstance(a, SwitchMaintenance) and not a.wrap)  # spec.maintenance, or a leftover turned off: not the new color's
    )  # fmt: skip
    why = "; ".join(f"{name}: {detail}" for name, detail in sorted(not_ready.items()))
    serving = f"{live} keeps serving" if live is not None else "nothing serves yet"
    blocker = Blocker("DependencyNotReady", f"dependsOn not healthy ({why}): the new color waits; {serving}")
    return replace(p, actions=kept, blockers=(*p.blockers, blocker))
