"""Deploy gates in the plan (pure, called by the planner): what runs between "the new color is healthy" and
"it takes traffic", and after it.

- spec.hooks.beforeSwitch: once per revision (a run that exited 0 is remembered in memory.json and never
  repeated; one a killed pass left running is collected, not started again), then
- spec.checks.beforeSwitch, in order, every time the color is about to take traffic, then the switch;
- spec.hooks.afterSwitch: once per revision, after the switch and its marker; it does not gate anything.
A revision whose checks or hook failed backs off like one that failed its health check (`gate_backoff`).
"""

from __future__ import annotations

import hashlib
import json

from controller.actions import Action, Blocker, RemoveHook, RunCheck, RunHook, SwitchRoute
from controller.backoff import BackoffPolicy
from controller.facts import (
    LABEL_APP,
    LABEL_COLOR,
    LABEL_HOOK,
    LABEL_MANAGED,
    LABEL_REVISION,
    MANAGED_BY,
    Memory,
    Observed,
    hook_key,
)
from controller.spec import COLORS, BeforeSwitchCheck, BlueGreenApp, Color

GATE_REASONS = frozenset({"CheckFailed", "HookFailed"})
BEFORE, AFTER = "beforeSwitch", "afterSwitch"


def hook_container_name(app: BlueGreenApp, phase: str, revision: str) -> str:
    return f"{app.name}-hook-{phase.lower()}-{revision}"


def hook_labels(app: BlueGreenApp, phase: str, revision: str) -> dict[str, str]:
    """What finds a hook's container again (after a kill -9): app, phase and revision."""
    return {LABEL_APP: app.name, LABEL_MANAGED: MANAGED_BY, LABEL_HOOK: phase, LABEL_REVISION: revision}


def describe_check(check: BeforeSwitchCheck) -> str:
    if check.http is not None:
        body = " containing the expected text" if check.http.bodyContains else ""
        return f"GET {check.http.path} must answer {check.http.expectStatus}{body}"
    return f"{(check.command or ['?'])[0]} must exit 0"


def gates_fingerprint(app: BlueGreenApp) -> str:
    """What the gates are (spec.checks, spec.hooks): a failure is held against these, not against later ones."""
    doc = {
        "checks": app.spec.checks.model_dump(mode="json") if app.spec.checks is not None else None,
        "hooks": app.spec.hooks.model_dump(mode="json") if app.spec.hooks is not None else None,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def gate_backoff(app: BlueGreenApp, mem: Memory, revision: str, now: float, policy: BackoffPolicy) -> Blocker | None:
    """A healthy new color whose revision failed a check or its hook is not tried again before its retry instant,
    unless the checks or hooks changed since (a spec change: tried at once)."""
    failure = mem.failures.get(revision)
    if failure is None or failure.reason not in GATE_REASONS:
        return None
    if failure.gates and failure.gates != gates_fingerprint(app):
        return None
    retry_at = failure.next_retry_at(policy)
    if now >= retry_at:
        return None
    return Blocker(
        "BackingOff",
        f"revision {revision} failed {failure.count}x on {failure.color} ({failure.message}); "
        f"next try in {int(retry_at - now)}s, or at once when the spec changes",
    )


def add_gates(app: BlueGreenApp, obs: Observed, mem: Memory, revision: str, serving: Color | None, actions: list[Action]) -> None:
    """Insert the gates into `actions` (the planner's list, in place)."""
    want = app.spec.activeColor
    hooks, checks = app.spec.hooks, app.spec.checks
    collecting: set[str] = set()
    switch_at = next((i for i, a in enumerate(actions) if isinstance(a, SwitchRoute) and a.color == want), None)
    if switch_at is not None and serving != want:
        gates: list[Action] = []
        before = mem.hooks.get(hook_key(BEFORE, revision))
        if hooks is not None and hooks.beforeSwitch is not None and not (before is not None and before.succeeded):
            verb = "collect the run a killed pass left" if before is not None and before.state == "running" else "run"
            gates.append(RunHook(want, f"{verb} hooks.beforeSwitch ({hooks.beforeSwitch.command[0]}) for revision {revision}", phase=BEFORE, revision=revision))
            collecting.add(hook_key(BEFORE, revision))
        for n, check in enumerate(checks.beforeSwitch if checks is not None else []):
            gates.append(RunCheck(want, f"checks.beforeSwitch[{n}]: {describe_check(check)}", index=n, revision=revision))
        actions[switch_at:switch_at] = gates
    after = mem.hooks.get(hook_key(AFTER, revision))
    if hooks is not None and hooks.afterSwitch is not None:
        cutover = switch_at is not None and serving != want
        resume = after is not None and after.state == "running" and serving == want and switch_at is None
        if (cutover and after is None) or resume:
            actions.append(RunHook(want, f"run hooks.afterSwitch ({hooks.afterSwitch.command[0]}) for revision {revision}", phase=AFTER, revision=revision))
            collecting.add(hook_key(AFTER, revision))
    # Hook containers a killed pass left: removed once finished, unless a RunHook above collects it, or its
    # result is still to be collected for the revision wanted now (a later pass does). A running one is left alone.
    for c in obs.hooks:
        phase, rev = c.labels.get(LABEL_HOOK, ""), c.labels.get(LABEL_REVISION, "")
        key = hook_key(phase, rev)
        rec = mem.hooks.get(key)
        if c.running or key in collecting or (rev == revision and rec is not None and rec.state == "running"):
            continue
        label = c.labels.get(LABEL_COLOR)
        color: Color = next((x for x in COLORS if x == label), want)
        actions.append(RemoveHook(color, f"hook container {c.name} is {c.state} and its run is over", name=c.name, phase=phase, revision=rev))
