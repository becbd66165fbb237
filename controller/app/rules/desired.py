"""The desired color (`spec.activeColor`): the steps that make it run the spec's revision, healthy. Pure.

Safety rules, in order of precedence (with the route's: controller/app/rules/route.py):
1. Never route to a color that has not passed its health check (in this pass or observed healthy) and run
   without a restart for `stableSeconds`: a crash loop that happens to answer UP is waited out first.
2. Never replace or stop the container that serves traffic while it works (`LiveColorOutdated`,
   `LiveUnhealthy`). A rotated secret alone does not replace it either (`rules/secrets.hold_live_secrets`).
A revision that failed backs off (`BackingOff`); one held off after a failed verification is the
switch-back rule's (controller/app/rules/switchback.py); a new color that would not fit is the capacity rule's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from controller.app.failover import Decision
from controller.app.plan import describe_container, matches
from controller.app.rules.switchback import Hold
from controller.kernel.backoff import BackoffPolicy
from controller.spec.base import Color, other
from controller.world.actions import (
    Action,
    Blocker,
    CreateContainer,
    RemoveContainer,
    StartContainer,
    WaitHealthy,
)
from controller.world.facts import MANAGED_BY, ContainerFact, Memory, Observed

if TYPE_CHECKING:  # the models load with the first spec validated (none on a spec-cache hit)
    from controller.spec.app import BlueGreenApp


@dataclass(frozen=True)
class Desired:
    actions: tuple[Action, ...]
    blockers: tuple[Blocker, ...]
    diffs: tuple[str, ...]
    ready: bool  # runs the revision, passes, and (unless it serves) ran a stability window: may take traffic now
    will_be_ready: bool  # ready, or made so by `actions`
    starts: bool  # `actions` create or start the desired color while another serves (the capacity rule's case)


def desired(
    app: BlueGreenApp,
    obs: Observed,
    mem: Memory,
    now: float,
    rev: str,
    fo: Decision,
    foreign: frozenset[Color],
    held: Hold | None,
    policy: BackoffPolicy,
) -> Desired:
    spec = app.spec
    want = spec.activeColor
    idle = other(want)
    serving = obs.serving
    actions: list[Action] = []
    blockers: list[Blocker] = []
    diffs: list[str] = []
    starts = False

    cur = obs.containers[want]
    good = matches(app, want, cur, rev)
    ready = good and cur is not None and cur.running and cur.healthy is True
    # Rule 1: passing one probe is not enough for a color that does not serve yet. It must also have run
    # without a restart for the stability window, or a crash loop that answers UP between two restarts
    # would get traffic; otherwise the pass waits out a full window first (WaitHealthy below).
    steady = cur is not None and cur.steady(now, spec.healthCheck.stableSeconds)
    unsteady = ready and serving != want and not steady
    ready = ready and not unsteady
    will_be_ready = ready

    if want in foreign:
        diffs.append(f"container {app.container_name(want)}: not created by {MANAGED_BY}; left alone")
    elif held is not None:
        # Post-switch verification failed for this revision: it gets no traffic until a retry is due.
        blockers.append(held.blocker)
        will_be_ready = False
    elif not ready:
        diffs.append(f"container {app.container_name(want)}: {describe_container(cur)}; want running healthy {spec.image} revision={rev}")
        live_running = serving == want and cur is not None and cur.running
        failure = mem.failures.get(rev)
        retry_at = failure.next_retry_at(policy) if failure else None
        name = app.container_name(want)
        wait = WaitHealthy(want, f"{spec.healthCheck.path} must answer {spec.healthCheck.expectStatus}")
        if fo.kind in ("switch", "held"):
            pass  # traffic goes to the other color by failover (rules/failover.steer); the failed color is the operator's
        elif live_running and not good:
            # Replacing the container that serves traffic would drop it. The blue-green way is to flip.
            blockers.append(
                Blocker(
                    "LiveColorOutdated",
                    f"{want} serves traffic and runs {cur.image if cur else '?'} (revision {cur.revision if cur else '-'}), "
                    f"the spec wants {spec.image} (revision {rev}) on {want}: replacing the live container would drop "
                    f"traffic; set activeColor: {idle} to deploy it there",
                )
            )
        elif live_running and cur is not None:
            # Right revision, serving, not healthy: it may be starting; never recreate what serves traffic.
            deadline = (cur.started_at or now) + spec.healthCheck.timeoutSeconds
            if now < deadline:
                actions.append(WaitHealthy(want, f"{name} serves traffic but is not healthy yet ({cur.health_detail})", deadline=deadline))
                will_be_ready = True
            else:
                blockers.append(
                    Blocker(
                        "LiveUnhealthy",
                        f"{name} serves traffic but fails its health check ({cur.health_detail}); it is not replaced "
                        f"while live: check its logs and dependencies, or set activeColor: {idle}",
                    )
                )
        elif failure is not None and retry_at is not None and now < retry_at:
            blockers.append(
                Blocker(
                    "BackingOff",
                    f"revision {rev} failed {failure.count}x on {want} ({failure.message}); "
                    f"next try in {int(retry_at - now)}s, or at once when the spec changes",
                )
            )
        else:
            # A new color starts (created, or started) while another serves: the capacity rule may hold it back.
            starts = want != serving and (cur is None or not good or not cur.running or (failure is not None and not cur.healthy))
            if cur is not None and (not good or (failure is not None and not cur.healthy)):
                why = "retry after a failed deploy" if good else f"is {describe_container(cur)}; want revision {rev}"
                actions.append(RemoveContainer(want, f"{name} {why}"))
                cur = None
            if cur is None:
                limits = f" ({spec.resources.describe()})" if spec.resources is not None and spec.resources.describe() else ""
                actions += [CreateContainer(want, f"{name} with {spec.image}{limits}", revision=rev), wait]
            elif not cur.running:
                actions += [StartContainer(want, f"{name} is {cur.state}"), wait]
            elif unsteady:
                # Passes now, but restarted or (re)started less than a window ago: prove a full window first.
                actions.append(
                    WaitHealthy(
                        want,
                        f"{name} passes {spec.healthCheck.path} but has not run {spec.healthCheck.stableSeconds:g}s "
                        f"without a restart{_restarts(cur)}: it must keep passing for a full window",
                    )
                )
            else:
                # Right revision, running, not healthy yet: keep waiting from when it started.
                deadline = (cur.started_at or now) + spec.healthCheck.timeoutSeconds
                actions.append(WaitHealthy(want, f"{name} started but is not healthy yet ({cur.health_detail})", deadline=deadline))
            will_be_ready = True
    return Desired(tuple(actions), tuple(blockers), tuple(diffs), ready, will_be_ready, starts)


def _restarts(c: ContainerFact) -> str:
    if c.restarting:
        return " (restarting)"
    if c.restart_count is None:
        return ""
    return f" (restarted {c.restart_count}x since it was started)" if c.restart_count else ""
