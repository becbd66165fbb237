"""The failover rule (`spec.failover: previous`; the state it remembers: controller/app/failover.py). Pure.

`failover` says what the rule decides for one observation; `steer` applies that decision to the desired color's
steps (a returned value: nothing is mutated). See controller/app/failover.py for the rule in words.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from controller.app.failover import FAILED_OVER, OFF, Decision, Kind, WaitLiveOrFailover, failed_for, passing
from controller.app.rules.stability import prove_window
from controller.spec.base import Color, other
from controller.store.documents import FailoverState
from controller.world.actions import Action, Blocker, StartContainer, WaitHealthy
from controller.world.facts import ContainerFact, Memory, Observed

if TYPE_CHECKING:  # the models load with the first spec validated (none on a spec-cache hit)
    from controller.spec.app import BlueGreenApp


def failover(app: BlueGreenApp, obs: Observed, mem: Memory, state: FailoverState, now: float, mono: float, boot: str | None = None) -> Decision:
    """What the failover rule says for this observation (`state` already `track`ed for it; `mono`: the monotonic
    clock then, which the failover instant is on)."""
    spec = app.spec
    if spec.failover == "none":
        return OFF
    want = spec.activeColor
    serving = obs.serving
    if state.active is not None:
        a = state.active
        return Decision(
            "held",
            a.to_color,
            message=f"failed over from {a.from_color} to {a.to_color} ({a.reason}); traffic stays on {a.to_color} "
            f"until the spec changes: fix {want} and change the spec, or set activeColor: {a.to_color}",
        )
    if serving != want or state.failing_color != want or state.failing_since is None:
        return Decision("ok")
    failing = failed_for(app, state, now, mono, boot).seconds
    deadline = mono + max(0.0, spec.failoverAfterSeconds - failing)
    live = app.container_name(want)
    cand_color = other(want)
    cand = obs.containers[cand_color]
    name = app.container_name(cand_color)
    why_not = _unavailable(app, cand, cand_color, mem, state)
    if why_not:
        return Decision("unavailable", deadline=deadline, message=f"{live} fails its health check; no failover: {why_not}")
    assert cand is not None and cand.revision is not None
    if failing < spec.failoverAfterSeconds:
        kind: Kind = "pending"
        message = (
            f"{live} fails its health check for {failing:.1f}s; failover to {name} "
            f"(revision {cand.revision}) after {spec.failoverAfterSeconds:g}s unless it recovers"
        )
    else:
        kind = "switch"
        message = (
            f"{live} failed its health check for {failing:.1f}s (failoverAfterSeconds {spec.failoverAfterSeconds:g}); "
            f"{name} passes and runs revision {cand.revision}, which served before"
        )
    return Decision(kind, cand_color, deadline=deadline, message=message, steady=cand.steady(now, spec.healthCheck.stableSeconds))


def _unavailable(app: BlueGreenApp, cand: ContainerFact | None, color: Color, mem: Memory, state: FailoverState) -> str:
    """Why `cand` may not take traffic by failover ("" when it may)."""
    name = app.container_name(color)
    if cand is None:
        return f"{name} is missing"
    if not cand.ours(app.name):
        return f"{name} was not created by the controller"
    if not cand.running:
        return f"{name} is {cand.state}"
    if cand.healthy is not True:
        return f"{name} fails its health check ({cand.health_detail})"
    if not cand.revision or state.served.get(color) != cand.revision:
        return f"{name} runs revision {cand.revision or '-'}, which is not the revision that served on {color} before"
    failure = mem.failures.get(cand.revision)
    if failure is not None:
        return f"revision {cand.revision} on {name} is remembered as failed ({failure.reason}: {failure.message})"
    if cand.revision in state.failed:
        return f"revision {cand.revision} on {name} is remembered as failed ({state.failed[cand.revision]})"
    return ""



@dataclass(frozen=True)
class Steered:
    """The plan under construction once decision `d` is applied: where traffic goes, and its steps."""

    target: Color | None
    actions: tuple[Action, ...]
    blockers: tuple[Blocker, ...]
    diffs: tuple[str, ...] = ()


def steer(
    app: BlueGreenApp, obs: Observed, d: Decision, target: Color | None, now: float, actions: tuple[Action, ...], blockers: tuple[Blocker, ...]
) -> Steered:
    """Decision `d` applied to the desired color's steps and where traffic was to go (returned, never mutated)."""
    want = app.spec.activeColor
    serving = obs.serving
    if d.kind == "pending":
        assert d.deadline is not None and d.color is not None
        live = obs.containers[want]
        # The failover instant governs the wait on the live color (restart-only waits and LiveUnhealthy become it);
        # the switch is planned after it and happens only if the live color still fails then.
        kept = tuple(
            a
            for a in actions
            if not (a.color == want and (isinstance(a, WaitHealthy) or (isinstance(a, StartContainer) and live is not None and live.restarting)))
        )
        wait = WaitLiveOrFailover(want, d.message, d.deadline, to=d.color)
        return Steered(
            d.color,
            (*kept, wait, *_prove_window(app, d)),
            tuple(b for b in blockers if b.reason != "LiveUnhealthy"),
            (f"failover: {d.message}",),
        )
    if d.kind == "unavailable":
        return Steered(target, actions, blockers, (f"failover: {d.message}",))
    if d.kind not in ("switch", "held"):
        return Steered(target, actions, blockers)
    assert d.color is not None
    blocked = (*(b for b in blockers if b.reason not in ("LiveUnhealthy", "BackingOff")), Blocker(FAILED_OVER, d.message))
    diffs = (f"failover: {d.message}",)
    if d.kind == "switch":
        return Steered(d.color, (*actions, *_prove_window(app, d)), blocked, diffs)
    # held: staying where traffic is is no switch; back onto the held color (after a hand edit moved Nginx)
    # only if it passes now, and after a full stability window if Docker restarted it meanwhile.
    if serving == d.color:
        return Steered(d.color, actions, blocked, diffs)
    held = obs.containers[d.color]
    if held is None or not passing(app, held):
        return Steered(serving, actions, blocked, diffs)
    proof = _prove_window(app, replace(d, steady=held.steady(now, app.spec.healthCheck.stableSeconds)))
    return Steered(d.color, (*actions, *proof), blocked, diffs)


def _prove_window(app: BlueGreenApp, d: Decision) -> tuple[Action, ...]:
    """A color that does not serve keeps the stability rule: one Docker restarted proves a full window first."""
    return () if d.color is None else prove_window(app, d.color, d.steady, "the failover")
