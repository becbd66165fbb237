"""Deploy gates in the plan (pure, composed by controller/app/decide.py): what runs between "the new color is healthy"
and "it takes traffic", and after it.

- spec.hooks.beforeSwitch: once per revision (a run that exited 0 is remembered in memory.json and never
  repeated; one a killed pass left running is collected, not started again), then
- spec.checks.beforeSwitch, in order, every time the color is about to take traffic, then the switch;
- spec.hooks.afterSwitch: once per revision, after the switch and its marker; it does not gate anything.
A revision whose checks or hook failed backs off like one that failed its health check (`gate_backoff`).

One migration at a time (`hook_busy`): while a beforeSwitch hook of another revision runs (a spec change
mid-hook), the desired revision's waits; every hook container keeps its own timeout (its label) from its start
(its run's record, else its creation), and one still running past it is stopped and removed first (`gates`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from controller.app.gates import AFTER, BEFORE, GATE_REASONS, gates_fingerprint
from controller.kernel.backoff import BackoffPolicy
from controller.spec.base import COLORS, HOOK_TIMEOUT_DEFAULT, Color
from controller.world.actions import Action, Blocker, RemoveHook, RunCheck, RunHook
from controller.world.facts import (
    LABEL_COLOR,
    LABEL_FINGERPRINT,
    LABEL_HOOK,
    LABEL_HOOK_TIMEOUT,
    LABEL_REVISION,
    ContainerFact,
    Memory,
    Observed,
    hook_key,
)

if TYPE_CHECKING:  # the models load with the first spec validated (none on a spec-cache hit)
    from controller.spec.app import BeforeSwitchCheck, BlueGreenApp, HookSpec


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
class HookRun:
    """A hook container's run as its own labels and record tell: when it started and how long it may take."""

    started_at: float
    timeout: float

    @property
    def deadline(self) -> float:
        return self.started_at + self.timeout


def hook_run(app: BlueGreenApp, c: ContainerFact, mem: Memory) -> HookRun:
    """Its start: its run's record while that says running, else the container's creation (no later than its
    start). Its timeout: its label, written at its creation (the spec may have changed since); a container
    without one (made by an older controller) gets the spec's timeout for its phase, else the default."""
    phase = c.labels.get(LABEL_HOOK, "")
    rec = mem.hooks.get(hook_key(phase, c.labels.get(LABEL_REVISION, "")))
    started = rec.started_at if rec is not None and rec.state == "running" else c.created
    try:
        timeout = float(c.labels[LABEL_HOOK_TIMEOUT])
    except (KeyError, ValueError):
        spec: HookSpec | None = getattr(app.spec.hooks, phase, None) if app.spec.hooks is not None else None
        timeout = spec.timeoutSeconds if spec is not None else HOOK_TIMEOUT_DEFAULT
    return HookRun(started, timeout)


def hook_busy(app: BlueGreenApp, obs: Observed, mem: Memory, revision: str, now: float) -> Blocker | None:
    """One migration at a time: `revision`'s beforeSwitch hook, still to run, waits while one of another revision
    runs, until that one ends or its own timeout passes (then `gates` stops it first, in the same plan)."""
    hooks = app.spec.hooks
    ran = mem.hooks.get(hook_key(BEFORE, revision))
    if hooks is None or hooks.beforeSwitch is None or (ran is not None and ran.succeeded):
        return None
    for c in obs.hooks:
        other_rev = c.labels.get(LABEL_REVISION, "")
        if not c.running or c.labels.get(LABEL_HOOK) != BEFORE or other_rev == revision:
            continue
        run = hook_run(app, c, mem)
        if now < run.deadline:
            return Blocker(
                "HookRunning",
                f"hooks.beforeSwitch of revision {other_rev} still runs in {c.name} (its timeout of {run.timeout:g}s "
                f"ends in {int(run.deadline - now) + 1}s): revision {revision}'s waits for it, one migration at a time",
            )
    return None


@dataclass(frozen=True)
class Gates:
    """The gates of a plan: `first` at its start (hooks past their timeout, stopped), `before_switch` right before its
    switch to the desired color, `after` at its end."""

    first: tuple[Action, ...] = ()
    before_switch: tuple[Action, ...] = ()
    after: tuple[Action, ...] = ()


def gates(app: BlueGreenApp, obs: Observed, mem: Memory, revision: str, switching: bool, now: float) -> Gates:
    """The gates for a plan that switches to the desired color (`switching`) or not."""
    want = app.spec.activeColor
    serving = obs.serving
    hooks, checks = app.spec.hooks, app.spec.checks
    collecting: set[str] = set()
    first: list[Action] = []
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
    # Hook containers a killed (or superseded) pass left: removed once finished, unless a RunHook above collects it,
    # or its result is still to be collected for the revision wanted now (a later pass does). A running one is left
    # alone until its own timeout passes: then it is stopped and removed first, its run recorded as timed out.
    for c in obs.hooks:
        phase, rev = c.labels.get(LABEL_HOOK, ""), c.labels.get(LABEL_REVISION, "")
        key = hook_key(phase, rev)
        rec = mem.hooks.get(key)
        if key in collecting:
            continue
        label = c.labels.get(LABEL_COLOR)
        color: Color = next((x for x in COLORS if x == label), want)
        secrets = c.labels.get(LABEL_FINGERPRINT)
        if c.running:
            run = hook_run(app, c, mem)
            if now >= run.deadline:
                why = f"hook container {c.name} still runs past its timeout ({run.timeout:g}s since its start): stop and remove it"
                first.append(RemoveHook(color, why, name=c.name, phase=phase, revision=rev, timed_out=True, secrets=secrets))
            continue
        if rev == revision and rec is not None and rec.state == "running":
            continue
        why = f"hook container {c.name} is {c.state} and its run is over"
        after.append(RemoveHook(color, why, name=c.name, phase=phase, revision=rev, secrets=secrets))
    return Gates(tuple(first), tuple(before), tuple(after))
