"""Failover to the warm previous color (`spec.failover: previous`): what it remembers, and the rule in words. No I/O.

The rule itself is `controller/app/rules/failover.py` (what it says for one observation, and how it steers the
plan); here is what it remembers: `gather` tracks `FailoverState` for each observation (`track`) and the
reconciler keeps it in the state dir (`apps/<app>/failover.json`), so that "failing since" survives cron passes.

The rule: the live color is the spec's `activeColor` and it fails (not running, or failing its health check)
since `failing_since`; once that is `failoverAfterSeconds` old, traffic moves to the other color when
- it is ours, running and passes its health check in this observation (never route to a failing color),
- it runs the revision that color last served (`served`: recorded while it served and passed), i.e. the
  release that served before the failing one, not something deployed there since,
- the failure memory holds no failure of that revision (a deploy that failed, VerificationFailed, ...).
The failover is announced (`intend`, saved before its switch runs) and made active by the first observation
that finds traffic on its color (`track`), so a kill -9 at any instant never loses it.
Once failed over, nothing moves back by itself (no flapping): the failover holds until the spec document
changes (a new generation), which the operator does to flip to the healthy color or to redeploy.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from controller.kernel.elapsed import Elapsed
from controller.spec.base import Color, other
from controller.store.documents import FailedOver, FailoverState
from controller.world.actions import WaitHealthy
from controller.world.facts import ContainerFact, Memory, Observed

if TYPE_CHECKING:  # the models load with the first spec validated (none on a spec-cache hit)
    from controller.spec.app import BlueGreenApp

Kind = Literal["off", "ok", "pending", "switch", "held", "unavailable"]


@dataclass(frozen=True)
class Decision:
    kind: Kind
    color: Color | None = None  # switch/held: where traffic goes
    deadline: float | None = None  # pending/switch: the failover instant, on the monotonic clock (World.monotonic)
    message: str = ""
    steady: bool = True  # switch: the target ran a full stability window (else it must prove one first)


OFF = Decision("off")
FAILED_OVER = "FailedOver"  # the blocker's (Degraded's) and the condition's reason


@dataclass(frozen=True)
class WaitLiveOrFailover(WaitHealthy):
    """Failover pending: poll the live color until `deadline` (the failover instant), the switch to `to` planned
    after it. The live color passing again, or `to` failing its probe, calls the rest of the plan off (the next
    pass plans anew); reaching the deadline with `to` passing lets the switch go ahead at once."""

    to: Color | None = None


def passing(app: BlueGreenApp, c: ContainerFact | None) -> bool:
    """Ours, running and passing its health check in this observation."""
    return c is not None and c.ours(app.name) and c.running and c.healthy is True


def track(
    app: BlueGreenApp, obs: Observed, state: FailoverState, now: float, mono: float, mem: Memory | None = None, boot: str | None = None
) -> FailoverState:
    """The state after observing `obs`: what each color served (for every app, so that a failover enabled later
    knows the standby's release) and which served revision `mem` holds as failed; with spec.failover when the
    live color began failing; the end of a failover whose spec has changed. Pure: the caller saves it when
    it differs (for an app without failover: at a cutover, or when a served revision is remembered as failed)."""
    serving = obs.serving
    intent, state = state.switching, replace(state, switching=None)
    if intent is not None and state.active is None and intent.generation == app.generation() and serving == intent.to_color:
        state = activate(app, state, intent.to_color, intent.revision, now, mono, boot)  # the switch it announced happened
    active = state.active if state.active is not None and state.active.generation == app.generation() else None
    served = dict(state.served)
    failing_color, failing_since, failing_for = None, None, None
    if serving is not None:
        live = obs.containers[serving]
        if passing(app, live) and live is not None and live.revision:
            served[serving] = live.revision
        elif app.spec.failover != "none" and (live is None or live.ours(app.name)):
            # Not running, restarting, or failing its probe: failing since the first pass that saw it so.
            failing_color = serving
            if state.failing_color == serving and state.failing_since is not None:
                failing_since, failing_for = state.failing_since, failed_for(app, state, now, mono, boot)
            else:
                failing_since, failing_for = now, Elapsed(0.0, mono, boot)
    failed = {rev: why for rev, why in state.failed.items() if rev in served.values()}
    for rev in served.values():  # for every app: a failover enabled later knows what failed before (issue 19 #4)
        f = mem.failures.get(rev) if mem is not None else None
        if f is not None:
            failed[rev] = f"{f.reason}: {f.message}"
    return FailoverState(
        failing_color=failing_color, failing_since=failing_since, failing_for=failing_for, served=served, active=active, failed=failed
    )


def failed_for(app: BlueGreenApp, state: FailoverState, now: float, mono: float, boot: str | None = None) -> Elapsed:
    """How long the failing color has failed, counted up to monotonic reading `mono` (a state written without it:
    the wall clock's age of failing-since, within [0, failoverAfterSeconds]: a step either way is harmless)."""
    if state.failing_for is not None:
        return state.failing_for.at(mono, boot)
    return Elapsed.since_wall(state.failing_since if state.failing_since is not None else now, now, mono, app.spec.failoverAfterSeconds, boot)


def intend(app: BlueGreenApp, state: FailoverState, d: Decision, now: float) -> FailoverState:
    """The state to save before the switch of decision `d` (a `switch`, or a `pending` one) runs: the failover it
    announces, made `active` by the first observation that finds traffic on `d.color` (`track`)."""
    assert d.kind in ("switch", "pending") and d.color is not None
    revision = state.served.get(d.color, "")  # the rule checked that the container runs this one
    return replace(state, switching=FailedOver(app.generation(), other(d.color), d.color, revision, now, d.message))


def failed_over(app: BlueGreenApp, state: FailoverState, now: float, mono: float, boot: str | None = None) -> FailedOver | None:
    """The failover `state` holds: the active one, or the one announced as the next observation would make it."""
    if state.active is not None or state.switching is None:
        return state.active
    return activate(app, state, state.switching.to_color, state.switching.revision, now, mono, boot).active


def activate(app: BlueGreenApp, state: FailoverState, to: Color, revision: str, now: float, mono: float, boot: str | None = None) -> FailoverState:
    """The state once traffic has moved to `to` by a failover."""
    failed = other(to)
    reason = (
        f"{app.container_name(failed)} failed its health check for {failed_for(app, state, now, mono, boot).seconds:.1f}s (failoverAfterSeconds "
        f"{app.spec.failoverAfterSeconds:g}); {app.container_name(to)} passes and runs revision {revision}, which served before"
    )
    rec = FailedOver(app.generation(), failed, to, revision, now, reason)
    return replace(state, active=rec, failing_color=None, failing_since=None, failing_for=None)
