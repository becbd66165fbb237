"""The preview rule (spec.preview): the next release on the idle color, for requests that ask for it. Pure.

While the active color serves everyone, the idle color runs `spec.preview` (image, env over spec.env), created
and health-gated like a deploy. Once it has passed its check for `stableSeconds` the preview flag file
(`<flagFile>.preview`) is created: the site of nginx/ then sends requests that carry `X-Bluegreen-Preview: 1`
or the cookie `bluegreen_preview=1` to the idle color, and the control server's `/bluegreen-preview/<app>/`
route (the same test) confirms it, as `/bluegreen/<app>/` confirms the live route.

Rules, on top of the app's own (which keep precedence; composed by controller/app/decide.py):
1. A preview never touches the live color: nothing happens to the idle color for it until the active color
   serves and no switch is pending (a deploy or rollback in progress leaves the idle color alone), nor while a
   verification window is open (spec.verify): the idle color is then the previous color, the way back.
2. Preview requests reach only a preview that has passed its check and run `stableSeconds` without a restart;
   the flag is removed first whenever that stops being true, and before anything replaces the idle color.
3. A failing preview degrades the preview only: its revision is remembered with the same backoff as a failed
   deploy, `PreviewReady` is False, the live color and its conditions are untouched.
4. Promotion (image <- preview image, flip activeColor, drop preview) finds the new color already running that
   revision (`spec.preview_app`): the ordinary rules make it a switch. No preview in the spec and a
   preview flag on disk: the flag is removed before anything else, so the idle color is a plain standby again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from controller.app.plan import describe_container, matches
from controller.app.preview import COOKIE, HEADER, PreviewState
from controller.app.rules.capacity import capacity_blocker
from controller.kernel.backoff import BackoffPolicy
from controller.spec.base import Color, other, preview_app
from controller.world.actions import (
    Action,
    CreatePreview,
    RemovePreview,
    StartPreview,
    SwitchPreview,
    WaitPreview,
)
from controller.world.facts import ContainerFact, Memory, Observed
from controller.world.verification import window_closed

if TYPE_CHECKING:  # the models load with the first spec validated (none on a spec-cache hit)
    from controller.spec.app import BlueGreenApp


@dataclass(frozen=True)
class PreviewPlan:
    before: tuple[Action, ...] = ()  # run before the planner's own actions (the flag off)
    after: tuple[Action, ...] = ()  # run after them (the idle color's preview steps, the flag on)
    diffs: tuple[str, ...] = ()
    revision: str | None = None  # the idle color's wanted revision while a preview is set
    state: PreviewState | None = None  # None: no preview in the spec


def plan_preview(
    app: BlueGreenApp,
    obs: Observed,
    mem: Memory,
    now: float,
    extra: dict[str, str],
    *,
    target: Color | None,
    foreign: frozenset[Color],
    policy: BackoffPolicy,
) -> PreviewPlan:
    serving = obs.serving
    spec = app.spec
    want = spec.activeColor
    idle = other(want)
    flag_on = obs.preview_flag is not None
    live = obs.route.color if obs.route.reachable else serving
    off: tuple[Action, ...] = ()
    if flag_on and spec.nginx.switch == "flag":
        off = (SwitchPreview(live or want, f"remove {app.preview_flag_file}: preview requests go to the live color", on=False),)
    pv = spec.preview
    if pv is None:
        return PreviewPlan(before=off, diffs=(f"preview flag {app.preview_flag_file}: present; no preview in the spec",) if off else ())

    view = preview_app(app)
    rev = view.revision(idle, extra)
    name = app.container_name(idle)
    if foreign & {want, idle}:
        return PreviewPlan(before=off, revision=rev, state=PreviewState(False, "ForeignContainer", f"{name} or the live color is not ours"))
    if serving != want or target != want:
        # Rule 1: the idle color may still serve (or be about to): the preview waits for the live color to settle.
        return PreviewPlan(
            before=off, revision=rev, state=PreviewState(False, "WaitingForLive", f"the preview starts once {want} serves {spec.image}")
        )
    if not window_closed(mem.verify):
        # Rule 1: the switch-back target is never replaced or stopped while the window that may need it is open.
        why = f"the preview starts once the verification window closes: {app.container_name(idle)} is the way back until then"
        return PreviewPlan(before=off, revision=rev, state=PreviewState(False, "WaitingForVerification", why))

    cur = obs.containers[idle]
    good = matches(view, idle, cur, rev)
    passing = good and cur is not None and cur.running and cur.healthy is True
    steady = passing and cur is not None and cur.steady(now, spec.healthCheck.stableSeconds)
    pr = obs.preview_route
    confirmed = flag_on and pr is not None and pr.reachable and pr.color == idle
    ask = f"requests with {HEADER}: 1 or cookie {COOKIE}=1"
    failure = mem.failures.get(rev)
    retry_at = failure.next_retry_at(policy) if failure else None
    backing_off = (
        PreviewState(
            False,
            "PreviewFailed",
            f"preview revision {rev} ({pv.image}) failed {failure.count}x on {idle} ({failure.message}); "
            f"next try in {int(retry_at - now)}s, or at once when the spec changes",
        )
        if failure is not None and retry_at is not None and now < retry_at
        else None
    )
    serving_state = PreviewState(True, "PreviewServing", f"{name} runs {pv.image} (revision {rev}); {ask} reach it")
    if passing and confirmed:
        # Like the live color: a preview that serves and passes keeps serving (no new stability window).
        return PreviewPlan(revision=rev, state=serving_state)
    on = SwitchPreview(idle, f"create {app.preview_flag_file}: {ask} go to {idle}, confirm", on=True)
    if steady:
        shown = "missing" if not flag_on else f"present, preview requests reach {_route_seen(obs)}"
        diff = f"preview flag {app.preview_flag_file}: {shown}; want preview requests on {idle}"
        if backing_off is not None:  # its route could not be confirmed: the same backoff as a failed check
            return PreviewPlan(before=off, diffs=(diff,), revision=rev, state=backing_off)
        return PreviewPlan(after=(on,), diffs=(diff,), revision=rev, state=serving_state)

    diffs = [f"container {name}: {describe_container(cur)}; want running healthy preview {pv.image} revision={rev}"]
    if off:
        diffs.append(f"preview flag {app.preview_flag_file}: present; {name} is not a proven preview")
    if backing_off is not None:
        # Rule 3: no action, no blocker: the live color is converged, only the preview is not.
        return PreviewPlan(before=off, diffs=tuple(diffs), revision=rev, state=backing_off)
    # Rule 2: the flag off first (when on), then the steps that prove the preview, then the flag on.
    steps = (*_steps(app, idle, cur, good, failure is not None, now, rev), on)
    if any(isinstance(a, (CreatePreview, StartPreview)) for a in steps):
        # The capacity check of a new color (spec.resources) holds for a preview too: short, it degrades the preview only.
        short = capacity_blocker(view, obs.capacity, idle, serving, obs.containers[want])
        if short is not None:
            return PreviewPlan(before=off, diffs=tuple(diffs), revision=rev, state=PreviewState(False, short.reason, short.message))
    return PreviewPlan(
        before=off,
        after=steps,
        diffs=tuple(diffs),
        revision=rev,
        state=PreviewState(False, "PreviewProgressing", "; ".join(a.describe() for a in steps)),
    )


def _steps(
    app: BlueGreenApp, idle: Color, cur: ContainerFact | None, good: bool, failed_before: bool, now: float, rev: str
) -> tuple[Action, ...]:
    """The idle color's way to a running, proven preview: the planner's deploy steps for the wanted color."""
    hc = app.spec.healthCheck
    name = app.container_name(idle)
    pv = app.spec.preview
    assert pv is not None
    wait = WaitPreview(idle, f"preview {name}: {hc.path} must answer {hc.expectStatus}")
    steps: list[Action] = []
    if cur is not None and (not good or (failed_before and not cur.healthy)):
        steps.append(RemovePreview(idle, f"{name} is {'a failed preview' if good else 'not the preview release'}: replace it"))
        cur = None
    if cur is None:
        steps += [CreatePreview(idle, f"preview {name} with {pv.image}", revision=rev), wait]
    elif not cur.running:
        steps += [StartPreview(idle, f"preview {name} is {cur.state}"), wait]
    elif good and cur.healthy:
        steps.append(WaitPreview(idle, f"preview {name} passes {hc.path}: it must keep passing for a full window"))
    else:
        deadline = (cur.started_at or now) + hc.timeoutSeconds
        steps.append(WaitPreview(idle, f"preview {name} started but is not healthy yet ({cur.health_detail})", deadline=deadline))
    return tuple(steps)


def _route_seen(obs: Observed) -> str:
    pr = obs.preview_route
    if pr is None or not pr.reachable:
        return f"nothing ({pr.detail if pr else 'not probed'})"
    return pr.color or pr.upstream or "no color"
