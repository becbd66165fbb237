"""Deploy gates in the plan (pure, composed by controller/app/decide.py): what runs between "the new color is healthy"
and "it takes traffic", and after it.

- spec.hooks.beforeSwitch: once per revision (a run that exited 0 is remembered in memory.json and never
  repeated; one a killed pass left running is collected, not started again), then
- spec.checks.beforeSwitch, in order, every time the color is about to take traffic, then the switch;
- spec.hooks.afterSwitch: once per revision, after the switch and its marker; it does not gate anything.
A revision whose checks or hook failed backs off like one that failed its health check (`gate_backoff`).
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.app.gates import AFTER, BEFORE, GATE_REASONS, gates_fingerprint
from controller.kernel.backoff import BackoffPolicy
from controller.spec.app import COLORS, BeforeSwitchCheck, BlueGreenApp, Color
from controller.world.actions import Action, Blocker, RemoveHook, RunCheck, RunHook
from controller.world.facts import LABEL_COLOR, LABEL_HOOK, LABEL_REVISION, Memory, Observed, hook_key


def describe_check(check: BeforeSwitchCheck) -> str:
    if check.http is not None:
        body = " containing the expected text" if check.http.bodyContains else ""
        return f"GET {check.http.path} must answer {check.http.expectStatus}{body}"
    return f"{(check.command or ['?'])[0]} must exit 0"


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


@dataclass(frozen=True)
class Gates:
    """The gates of a plan: `before_switch` go right before its switch to the desired color, `after` at its end."""

    before_switch: tuple[Action, ...] = ()
    after: tuple[Action, ...] = ()


def gates(app: BlueGreenApp, obs: Observed, mem: Memory, revision: str, switching: bool) -> Gates:
    """The gates for a plan that switches to the desired color (`switching`) or not."""
    want = app.spec.activeColor
    serving = obs.serving
    hooks, checks = app.spec.hooks, app.spec.checks
    collecting: set[str] = set()
    before: list[Action] = []
    after: list[Action] = []
    if switching and serving != want:
        ran = mem.hooks.get(hook_key(BEFORE, revision))
        if hooks is not None and hooks.beforeSwitch is not None and not (ran is not None and ran.succeeded):
            verb = "collect the run a killed pass left" if ran is not None and ran.state == "running" else "run"
            before.append(RunHook(want, f"{verb} hooks.beforeSwitch ({hooks.beforeSwitch.command[0]}) for revision {revision}", phase=BEFORE, revision=revision))
            collecting.add(hook_key(BEFORE, revision))
        for n, check in enumerate(checks.beforeSwitch if checks is not None else []):
            before.append(RunCheck(want, f"checks.beforeSwitch[{n}]: {describe_check(check)}", index=n, revision=revision))
    done = mem.hooks.get(hook_key(AFTER, revision))
    if hooks is not None and hooks.afterSwitch is not None:
        cutover = switching and serving != want
        resume = done is not None and done.state == "running" and serving == want and not switching
        if (cutover and done is None) or resume:
            after.append(RunHook(want, f"run hooks.afterSwitch ({hooks.afterSwitch.command[0]}) for revision {revision}", phase=AFTER, revision=revision))
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
        after.append(RemoveHook(color, f"hook container {c.name} is {c.state} and its run is over", name=c.name, phase=phase, revision=rev))
    return Gates(tuple(before), tuple(after))
