"""The maintenance rule (spec.maintenance, hooks.beforeSwitch.maintenance): the site answers every public request
with 503 and the maintenance page. Pure.

The switch is a file, like the color's: while `<flagFile>.maintenance` exists the site of nginx/ answers every public
request itself (503, Retry-After, the page with the file's content as its message); the control server and the
colors' loopback ports are not affected, so health checks and the controller's confirmations go on. The control
server's `/bluegreen-maintenance/<app>` route makes the same test (503 on, 204 off) and confirms each change.

When maintenance is wanted is desired state, never a process's memory, so a kill -9 at any point is finished by the
next pass and nothing stays in maintenance because the process that turned it on was lost:
1. `spec.maintenance.enabled`: on, for as long as the spec says so.
2. A wrapped migration (`hooks.beforeSwitch.maintenance`): on while a plan switches to the wanted color and either runs
   the beforeSwitch hook or finds maintenance already on (a killed pass's, resumed): on after the new color is
   healthy and just before the gates, off right after the switch is confirmed.
3. Otherwise off, first thing in the plan: after a failed hook or check (the revision backs off, no switch is
   planned) the old color serves again; the reconciler applies that step even after a failed pass
   (controller/app/maintenance.py's `cleanup_after_failure`).

Composed by controller/app/decide.py after the gates and the preview: it places its steps by the SwitchRoute and the
RunHook/RunCheck steps they put in the plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from controller.app.maintenance import MaintenanceState, served
from controller.world.actions import (
    Action,
    CreateContainer,
    RemoveContainer,
    RunCheck,
    RunHook,
    StartContainer,
    SwitchMaintenance,
    SwitchRoute,
    WaitHealthy,
)
from controller.world.facts import Observed

if TYPE_CHECKING:  # the models load with the first spec validated (none on a spec-cache hit)
    from controller.spec.app import BlueGreenApp

DEFAULT_MESSAGE = "We are updating the service and will be back shortly."


def message(app: BlueGreenApp) -> str:
    """What the flag file holds: the page's message (the site shows it as written; spec/app.py restricts it)."""
    m = app.spec.maintenance
    return m.message if m is not None and m.message else DEFAULT_MESSAGE


def wanted_by_spec(app: BlueGreenApp) -> bool:
    return app.spec.maintenance is not None and app.spec.maintenance.enabled


def wraps_migrations(app: BlueGreenApp) -> bool:
    hooks = app.spec.hooks
    return hooks is not None and hooks.beforeSwitch is not None and hooks.beforeSwitch.maintenance


@dataclass(frozen=True)
class MaintenancePlan:
    actions: tuple[Action, ...]  # the plan's actions with the maintenance steps in place
    diffs: tuple[str, ...] = ()
    state: MaintenanceState | None = None  # the Maintenance condition (None: no maintenance for this app)


def plan_maintenance(app: BlueGreenApp, obs: Observed, actions: tuple[Action, ...]) -> MaintenancePlan:
    """The plan's actions (the gates' and the preview's included) with the maintenance steps added."""
    if app.spec.nginx.switch != "flag":
        return MaintenancePlan(actions)
    want = app.spec.activeColor
    serving = obs.serving
    flag = app.maintenance_flag_file
    on_now = obs.maintenance_flag is not None
    text = message(app)
    right = obs.maintenance_flag == text and served(obs.maintenance_route) is True
    switch_at = next((i for i, a in enumerate(actions) if isinstance(a, SwitchRoute) and a.color == want), None)
    cutover = switch_at is not None and serving != want
    runs_hook = any(isinstance(a, RunHook) and a.phase == "beforeSwitch" for a in actions)
    wrapped = wraps_migrations(app) and cutover and (runs_hook or on_now)
    enabled = wanted_by_spec(app)
    if not (enabled or wrapped or on_now or wraps_migrations(app) or app.spec.maintenance is not None):
        return MaintenancePlan(actions)
    color = serving or want
    out = list(actions)
    diffs: list[str] = []
    shown = "present" if on_now else "missing"
    if enabled and not right:
        diffs.append(f"maintenance flag {flag}: {shown}{_unconfirmed(obs, on_now)}; spec.maintenance.enabled")
        out.insert(0, SwitchMaintenance(color, f"create {flag}: the site answers 503 with the maintenance page, confirm", on=True, message=text))
    elif wrapped and switch_at is not None:
        # The new color still to be made healthy (a kill -9 left maintenance on and the color went): the site serves
        # meanwhile; maintenance comes back just before the gates.
        prepares = any(isinstance(a, _PREPARE) and a.color == want for a in out[:switch_at])
        first_gate = switch_at
        while first_gate > 0 and isinstance(out[first_gate - 1], (RunHook, RunCheck)):
            first_gate -= 1
        if not enabled:
            out.insert(
                switch_at + 1,
                SwitchMaintenance(want, f"remove {flag}: {want} serves; the migration's maintenance ends, confirm", wrap=True),
            )
        if not right or prepares:
            diffs.append(f"maintenance flag {flag}: {shown}; the migration to {want} runs in maintenance")
            out.insert(
                first_gate,
                SwitchMaintenance(
                    color, f"create {flag}: maintenance for the migration (hooks.beforeSwitch.maintenance), confirm", on=True, message=text, wrap=True
                ),
            )
        if on_now and prepares:
            diffs.append(f"maintenance flag {flag}: present; {want} is not healthy yet")
            out.insert(0, SwitchMaintenance(color, f"remove {flag}: {want} is not healthy yet, {color} serves meanwhile, confirm"))
    elif on_now and not enabled:
        diffs.append(f"maintenance flag {flag}: present; no maintenance wanted")
        out.insert(0, SwitchMaintenance(color, f"remove {flag}: no maintenance wanted, {color} serves again, confirm"))
    if enabled:
        state = MaintenanceState(on_now, "Enabled", f"spec.maintenance.enabled: the site answers 503 ({text})")
    elif wrapped:
        state = MaintenanceState(on_now, "Migration", f"the migration to {want} runs in maintenance until {want} serves")
    elif on_now:
        state = MaintenanceState(True, "Ending", "maintenance is on and no longer wanted: it is turned off")
    else:
        state = MaintenanceState(False, "Off", "the site serves the live color")
    return MaintenancePlan(tuple(out), tuple(diffs), state)


_PREPARE = (CreateContainer, StartContainer, RemoveContainer, WaitHealthy)


def _unconfirmed(obs: Observed, on_now: bool) -> str:
    if not on_now:
        return ""
    s = served(obs.maintenance_route)
    if s is True:
        return " (another message)"
    r = obs.maintenance_route
    return f", not confirmed ({r.detail if r is not None else 'not asked'})"

