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
Once failed over, nothing moves back by itself (no flapping): the failover holds until the spec document
changes (a new generation), which the operator does to flip to the healthy color or to redeploy.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

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
    deadline: float | None = None  # pending/switch: failing_since + failoverAfterSeconds
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


def track(app: BlueGreenApp, obs: Observed, state: FailoverState, now: float, mem: Memory | None = None) -> FailoverState:
    """The state after observing `obs`: what each color served (for every app, so that a failover enabled later
    knows the standby's release), and with spec.failover when the live color began failing and which served
    revision `mem` holds as failed; the end of a failover whose spec has changed. Pure: the caller saves it when
    it differs (for an app without failover, only at a cutover)."""
    serving = obs.serving
    active = state.active if state.active is not None and state.active.generation == app.generation() else None
    served = dict(state.served)
    failing_color, failing_since = None, None
    if serving is not None:
        live = obs.containers[serving]
        if passing(app, live) and live is not None and live.revision:
            served[serving] = live.revision
        elif app.spec.failover != "none" and (live is None or live.ours(app.name)):
            # Not running, restarting, or failing its probe: failing since the first pass that saw it so.
            failing_color = serving
            failing_since = state.failing_since if state.failing_color == serving and state.failing_since is not None else now
    failed = {rev: why for rev, why in state.failed.items() if rev in served.values()}
    for rev in served.values() if app.spec.failover != "none" else ():
        f = mem.failures.get(rev) if mem is not None else None
        if f is not None:
            failed[rev] = f"{f.reason}: {f.message}"
    return FailoverState(failing_color=failing_color, failing_since=failing_since, served=served, active=active, failed=failed)


def activate(app: BlueGreenApp, state: FailoverState, d: Decision, revision: str, now: float) -> FailoverState:
    """The state once traffic has moved by decision `d` (a `switch`, or a `pending` one whose instant came)."""
    assert d.kind in ("switch", "pending") and d.color is not None
    failed = other(d.color)
    since = state.failing_since if state.failing_since is not None else now
    reason = (
        f"{app.container_name(failed)} failed its health check for {now - since:.1f}s (failoverAfterSeconds "
        f"{app.spec.failoverAfterSeconds:g}); {app.container_name(d.color)} passes and runs revision {revision}, which served before"
    )
    rec = FailedOver(app.generation(), failed, d.color, revision, now, reason)
    return replace(state, active=rec, failing_color=None, failing_since=None)
