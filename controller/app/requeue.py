"""The requeue contract: when a reconcile of an app wants to run again, derived from its plan and its error.

The shape of controller-runtime's `Result{RequeueAfter}` / `TerminalError` (and kopf's
`TemporaryError(delay)` / `PermanentError`). A `Requeue` with `after=None` means "not until something
changes": a spec edit, a Docker event for the app's containers, SIGHUP or the periodic resync still trigger
a pass. Watch mode obeys it (`watch.Worker`); a `--once` run ignores it (cron is its clock).

    the pass ended with, in the order checked              come back
    Interrupted (a stop between two steps)                 soon (SOON); no failure
    a TemporaryError, or any exception outside the tree    capped exponential backoff by consecutive failures
    blocker BackingOff                                     exactly the failed revision's remembered retry instant
    blockers only a spec edit lifts (LiveColorOutdated)    not until a change
    any other blocker (LiveUnhealthy, RouteUnverified)     capped exponential backoff: the world may lift it
    a PermanentError (InvalidInput included)               not until a change
    converged                                              not until a change
    only waits left (a color still starting)               soon (SOON)
    other actions still left (MAX_PASSES used up)          capped exponential backoff: something keeps undoing
                                                           the passes' work, so do not fight it every second

The error's side of the Temporary/Permanent split (controller/kernel/errors.py) decides; a blocker on the plan
observed after the error comes before a permanent error, because a failed deploy (HealthCheckFailed) has a
known retry instant (`Failure.next_retry_at`) and a failed wait on the live color is a `LiveUnhealthy`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from controller.app.plan import Plan
from controller.kernel.backoff import backoff
from controller.kernel.errors import HealthCheckFailed, Interrupted, PermanentError
from controller.world.actions import Blocker, WaitHealthy

SOON = 1.0  # seconds: a wait or a pass cut short is picked up again at once, give or take a debounce
TEMPORARY_BASE, TEMPORARY_MAX = 1.0, 60.0  # temporary errors: 1 s, doubling, at most 60 s
MIN_AFTER = 0.05  # a retry instant already past (clocks, rounding) must not turn into a busy loop
SPEC_ONLY = frozenset({"LiveColorOutdated", "FailedOver"})  # blockers that only a spec edit (or an event) lifts
# A pass's first blocker that waits for the operator makes it "blocked"; any other blocker, "degraded".
BLOCKED = frozenset({"LiveColorOutdated", "AccessoryOutdated", "AccessoryNotOurs", "AccessoryRetiredKept"})


def result_of(error: BaseException | None, *, converged: bool, blockers: Sequence[Blocker]) -> str:
    """How a reconcile ended (one of metrics.RESULTS), for apps and accessories alike: its error first, then its
    last plan (converged, blocked or degraded by a blocker, or still progressing)."""
    if error is not None:
        return "degraded" if isinstance(error, HealthCheckFailed) else "progressing" if isinstance(error, Interrupted) else "error"
    if converged:
        return "converged"
    if blockers:
        return "blocked" if blockers[0].reason in BLOCKED else "degraded"
    return "progressing"


@dataclass(frozen=True)
class Requeue:
    """When to reconcile the app again."""

    after: float | None  # seconds from now; None: not until a change (spec edit, event, resync)
    reason: str  # what decided it: "converged", a blocker's reason, an error's class name, "progressing"
    failures: int = 0  # consecutive passes backed off for, this one included; 0 ends the streak

    @property
    def backing_off(self) -> bool:
        """A delay of the exponential backoff (watch jitters these; retry instants and SOON are exact)."""
        return self.failures > 0


NOT_RUN = Requeue(None, "not run")


def _backoff(reason: str, failures: int) -> Requeue:
    n = failures + 1
    return Requeue(backoff(n, TEMPORARY_BASE, TEMPORARY_MAX), reason, n)


def decide(plan: Plan | None, error: BaseException | None, *, now: float, retry_at: float | None = None, failures: int = 0) -> Requeue:
    """When to come back after a pass that ended with `plan` (the last observation's) and `error`.

    `retry_at`: the instant the failure memory allows the wanted revision again, if it holds a failure for it.
    `failures`: consecutive backed-off passes before this one (the `failures` of the previous Requeue).
    """
    if isinstance(error, Interrupted):  # a TemporaryError, but no failure: nothing went wrong
        return Requeue(SOON, type(error).__name__)
    if error is not None and not isinstance(error, PermanentError):
        # TemporaryError, or an exception outside the tree (a bug, a race): retry, ever more slowly.
        return _backoff(type(error).__name__, failures)
    if plan is not None and plan.blockers:
        reasons = [b.reason for b in plan.blockers]
        if "BackingOff" in reasons and retry_at is not None:
            return Requeue(max(MIN_AFTER, retry_at - now), "BackingOff")
        if all(r in SPEC_ONLY for r in reasons):
            return Requeue(None, reasons[0])
        return _backoff(reasons[0], failures)
    if error is not None:
        return Requeue(None, type(error).__name__)
    if plan is None:
        return Requeue(None, "no plan")
    if plan.converged:
        return Requeue(None, "converged")
    if all(isinstance(a, WaitHealthy) for a in plan.actions):
        return Requeue(SOON, "progressing")
    return _backoff("progressing", failures)
