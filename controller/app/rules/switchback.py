"""The switch-back rules of post-switch verification (pure; composed by `controller/app/decide.py`).

- A revision that failed its verification window (failure memory, reason VerificationFailed) gets no traffic
  until its backoff allows a retry or the spec changes its revision: traffic goes back to the color that
  served before the switch, if that color still runs the revision it ran then and passes its health check
  (and stays where it is otherwise: never to a color that is not proven). Rule 1 holds for the way back too:
  a previous color Docker restarted within `stableSeconds` is proven by a full window before the switch.
- With `standby: stop` the previous color is stopped only once the window has closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from controller.app.rules.stability import prove_window
from controller.kernel.backoff import BackoffPolicy
from controller.spec.base import Color
from controller.world.actions import Action, Blocker
from controller.world.facts import Memory, Observed
from controller.world.verification import FAILED_REASON, hold_message

if TYPE_CHECKING:  # the models load with the first spec validated (none on a spec-cache hit)
    from controller.spec.app import BlueGreenApp


@dataclass(frozen=True)
class Hold:
    target: Color | None  # where traffic goes while the revision is held off
    blocker: Blocker
    proof: tuple[Action, ...] = ()  # before traffic goes back: a full window on a previous color not steady now


def hold(app: BlueGreenApp, obs: Observed, mem: Memory, now: float, rev: str, serving: Color | None, policy: BackoffPolicy) -> Hold | None:
    """The revision `rev` of the desired color failed verification and may not be routed to yet: where to route."""
    want = app.spec.activeColor
    failure = mem.failures.get(rev)
    if failure is None or failure.reason != FAILED_REASON:
        return None
    retry_at = failure.next_retry_at(policy)
    if now >= retry_at:
        return None  # a retry: a full deploy with its own window
    target = serving if serving != want else None
    proof: tuple[Action, ...] = ()
    w = mem.verify
    if w is not None and w.revision == rev and w.color == want and w.from_revision is not None:
        prev = obs.containers[w.from_color]
        if (
            prev is not None
            and prev.ours(app.name)
            and prev.revision == w.from_revision
            and prev.running
            and prev.healthy is True
        ):
            target = w.from_color
            if serving != target:
                proof = prove_window(app, target, prev.steady(now, app.spec.healthCheck.stableSeconds), "the switch back")
    if target is None and serving == want:
        target = want  # nowhere proven to go back to: traffic stays (the message says so)
    shown = target if target is not None else serving
    msg = hold_message(want, shown, rev, failure.message, retry_at - now)
    if shown == want:
        msg += f"; the previous color is not available to switch back to (it must run the revision that served before and pass {app.spec.healthCheck.path})"
    return Hold(target, Blocker(FAILED_REASON, msg), proof)


def standby_may_stop(app: BlueGreenApp, mem: Memory, serving: Color | None, rev: str) -> bool:
    """`standby: stop` acts only after the verification window: not in the pass that switches, not while open."""
    if app.spec.verify is None:
        return True
    if serving != app.spec.activeColor:
        return False  # this plan switches: its window opens after the switch
    failure = mem.failures.get(rev)
    if failure is not None and failure.reason == FAILED_REASON:
        return False  # held off: the previous color is the way back
    w = mem.verify
    return not (w is not None and w.open and w.revision == rev and w.color == app.spec.activeColor)
