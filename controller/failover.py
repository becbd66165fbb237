"""Failover to the warm previous color (`spec.failover: previous`): plain data and pure rules, no I/O.

The planner asks `decide` what the rule says for one observation; the reconciler keeps `FailoverState` in
the state dir (`apps/<app>/failover.json`) through `track`, so that "failing since" survives cron passes.

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

from dataclasses import dataclass, field, replace
from typing import Annotated, Literal

from pydantic import Field

from controller.actions import Action, Blocker, StartContainer, WaitHealthy
from controller.document import Document, Epoch, Stored
from controller.facts import LABEL_APP, ContainerFact, Memory, Observed
from controller.routing import serving_color
from controller.spec import BlueGreenApp, Color, other

Kind = Literal["off", "ok", "pending", "switch", "held", "unavailable"]


@dataclass(frozen=True)
class FailedOver(Stored):
    """An active failover: traffic moved from `from_color` to `to_color` while the spec was `generation`."""

    generation: str
    from_color: Annotated[Color, Field(alias="from")]
    to_color: Annotated[Color, Field(alias="to")]
    revision: str  # the revision routed to
    at: Epoch
    reason: str


@dataclass(frozen=True)
class FailoverState(Stored):
    """What the failover rule needs to remember between passes (failover.json)."""

    failing_color: Annotated[Color | None, Field(alias="failingColor")] = None
    failing_since: Annotated[Epoch | None, Field(alias="failingSince")] = None
    served: dict[Color, str] = field(default_factory=dict)  # color -> revision it last served while passing
    active: FailedOver | None = None
    # Served revisions the failure memory held as failed (revision -> reason), kept here because memory.json
    # forgets failures of revisions the spec no longer names, which the previous release's soon is.
    failed: dict[str, str] = field(default_factory=dict)


FAILOVER = Document(FailoverState)  # failover.json


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


def _ours(app: BlueGreenApp, c: ContainerFact | None) -> bool:
    return c is not None and c.managed and c.labels.get(LABEL_APP) == app.name


def _passing(app: BlueGreenApp, c: ContainerFact | None) -> bool:
    return _ours(app, c) and c is not None and c.running and c.healthy is True


def track(app: BlueGreenApp, obs: Observed, state: FailoverState, now: float, mem: Memory | None = None) -> FailoverState:
    """The state after observing `obs`: what each color served (for every app, so that a failover enabled later
    knows the standby's release), and with spec.failover when the live color began failing and which served
    revision `mem` holds as failed; the end of a failover whose spec has changed. Pure: the caller saves it when
    it differs (for an app without failover, only at a cutover)."""
    serving = serving_color(app, obs.route, obs.include, obs.flag)
    active = state.active if state.active is not None and state.active.generation == app.generation() else None
    served = dict(state.served)
    failing_color, failing_since = None, None
    if serving is not None:
        live = obs.containers[serving]
        if _passing(app, live) and live is not None and live.revision:
            served[serving] = live.revision
        elif app.spec.failover != "none" and (_ours(app, live) or live is None):
            # Not running, restarting, or failing its probe: failing since the first pass that saw it so.
            failing_color = serving
            failing_since = state.failing_since if state.failing_color == serving and state.failing_since is not None else now
    failed = {rev: why for rev, why in state.failed.items() if rev in served.values()}
    for rev in served.values() if app.spec.failover != "none" else ():
        f = mem.failures.get(rev) if mem is not None else None
        if f is not None:
            failed[rev] = f"{f.reason}: {f.message}"
    return FailoverState(failing_color=failing_color, failing_since=failing_since, served=served, active=active, failed=failed)


def decide(app: BlueGreenApp, obs: Observed, mem: Memory, state: FailoverState, now: float) -> Decision:
    """What the failover rule says for this observation (`state` already `track`ed for it)."""
    spec = app.spec
    if spec.failover == "none":
        return OFF
    want = spec.activeColor
    serving = serving_color(app, obs.route, obs.include, obs.flag)
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
    deadline = state.failing_since + spec.failoverAfterSeconds
    live = app.container_name(want)
    cand_color = other(want)
    cand = obs.containers[cand_color]
    name = app.container_name(cand_color)
    why_not = _unavailable(app, cand, cand_color, mem, state)
    if why_not:
        return Decision("unavailable", deadline=deadline, message=f"{live} fails its health check; no failover: {why_not}")
    assert cand is not None and cand.revision is not None
    if now < deadline:
        return Decision(
            "pending",
            cand_color,
            deadline=deadline,
            message=f"{live} fails its health check for {now - state.failing_since:.1f}s; failover to {name} "
            f"(revision {cand.revision}) after {spec.failoverAfterSeconds:g}s unless it recovers",
            steady=cand.steady(now, spec.healthCheck.stableSeconds),
        )
    return Decision(
        "switch",
        cand_color,
        deadline=deadline,
        message=f"{live} failed its health check for {now - state.failing_since:.1f}s "
        f"(failoverAfterSeconds {spec.failoverAfterSeconds:g}); {name} passes and runs revision {cand.revision}, which served before",
        steady=cand.steady(now, spec.healthCheck.stableSeconds),
    )


def _unavailable(app: BlueGreenApp, cand: ContainerFact | None, color: Color, mem: Memory, state: FailoverState) -> str:
    """Why `cand` may not take traffic by failover ("" when it may)."""
    name = app.container_name(color)
    if cand is None:
        return f"{name} is missing"
    if not _ours(app, cand):
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


def steer(
    app: BlueGreenApp,
    obs: Observed,
    d: Decision,
    target: Color | None,
    serving: Color | None,
    now: float,
    actions: list[Action],
    blockers: list[Blocker],
    diffs: list[str],
) -> Color | None:
    """Apply decision `d` to the plan under construction (the planner's one call); returns the target color."""
    want = app.spec.activeColor
    if d.kind == "pending":
        assert d.deadline is not None and d.color is not None
        live = obs.containers[want]
        # The failover instant governs the wait on the live color (restart-only waits and LiveUnhealthy become it);
        # the switch is planned after it and happens only if the live color still fails then.
        actions[:] = [
            a
            for a in actions
            if not (a.color == want and (isinstance(a, WaitHealthy) or (isinstance(a, StartContainer) and live is not None and live.restarting)))
        ]
        blockers[:] = [b for b in blockers if b.reason != "LiveUnhealthy"]
        actions.append(WaitLiveOrFailover(want, d.message, d.deadline, to=d.color))
        _prove_window(app, d, actions)
        diffs.append(f"failover: {d.message}")
        return d.color
    if d.kind == "unavailable":
        diffs.append(f"failover: {d.message}")
        return target
    if d.kind not in ("switch", "held"):
        return target
    assert d.color is not None
    blockers[:] = [b for b in blockers if b.reason not in ("LiveUnhealthy", "BackingOff")]
    blockers.append(Blocker(FAILED_OVER, d.message))
    diffs.append(f"failover: {d.message}")
    if d.kind == "switch":
        _prove_window(app, d, actions)
        return d.color
    # held: staying where traffic is is no switch; back onto the held color (after a hand edit moved Nginx)
    # only if it passes now, and after a full stability window if Docker restarted it meanwhile.
    if serving == d.color:
        return d.color
    held = obs.containers[d.color]
    if held is None or not _passing(app, held):
        return serving
    _prove_window(app, replace(d, steady=held.steady(now, app.spec.healthCheck.stableSeconds)), actions)
    return d.color


def _prove_window(app: BlueGreenApp, d: Decision, actions: list[Action]) -> None:
    """A color that does not serve keeps the stability rule: one Docker restarted proves a full window first."""
    if not d.steady and d.color is not None:
        actions.append(
            WaitHealthy(
                d.color,
                f"{app.container_name(d.color)} passes but has not run {app.spec.healthCheck.stableSeconds:g}s "
                "without a restart: it must keep passing for a full window before the failover",
            )
        )
