"""The planner: a pure function from (desired, observed, memory, now) to an ordered list of actions.

No I/O here. Every symptom of drift (container gone, include edited, marker wrong, ...) is just
an observed state that differs from the desired one; the same rules converge all of them.

Safety rules, in order of precedence:
1. Never route to a color that has not passed its health check (in this pass or observed healthy) and run
   without a restart for `stableSeconds`: a crash loop that happens to answer UP is waited out first.
2. Never replace or stop the container that serves traffic while it works.
   A rotated secret alone does not replace it either (`hold_live_secrets`): it is reported as stale.
3. The marker names the color Nginx really serves, never what we hoped it serves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.actions import (
    Action,
    Blocker,
    CreateContainer,
    RemoveContainer,
    StartContainer,
    StopContainer,
    SwitchRoute,
    WaitHealthy,
    WriteMarker,
)
from controller.backoff import DEFAULT_POLICY, BackoffPolicy
from controller.capacity import capacity_blocker
from controller.facts import (
    FINGERPRINT_KEY,
    LABEL_APP,
    LABEL_FINGERPRINT,
    LABEL_MANAGED,
    MANAGED_BY,
    ContainerFact,
    Memory,
    Observed,
)
from controller.failover import OFF, Decision, FailoverState, steer
from controller.failover import decide as failover_rule
from controller.gateplan import add_gates, gate_backoff
from controller.preview import PreviewState, plan_preview
from controller.routing import flag_color, flag_says, render_include, serving_color
from controller.spec import COLORS, BlueGreenApp, Color, canonical_ip, other
from controller.switchback import hold, standby_may_stop


@dataclass(frozen=True)
class Plan:
    app: str
    generation: str
    revisions: dict[Color, str]
    serving: Color | None  # the color live before this plan (Nginx's answer, else the include's)
    target: Color | None  # the color live once the plan has run
    actions: tuple[Action, ...]
    blockers: tuple[Blocker, ...]
    diffs: tuple[str, ...]
    # The deploy-time revision inputs `revisions` were computed with (a created container is labelled with them).
    revision_extra: dict[str, str] = field(default_factory=dict)
    secrets_stale: str | None = None  # why the live color's secrets are out of date, if they are
    failover: Decision = OFF  # what the failover rule said (controller/failover.py)
    preview: PreviewState | None = None  # spec.preview's condition (None: no preview in the spec)

    @property
    def converged(self) -> bool:
        """Nothing to do and nothing blocks (`inSync` in `--plan --json`)."""
        return not self.actions and not self.blockers


def matches(app: BlueGreenApp, color: Color, c: ContainerFact | None, revision: str) -> bool:
    """A container is the one we want when its label, image and published port all agree with the spec."""
    return (
        c is not None
        and c.revision == revision
        and c.image == app.spec.image
        and c.host_port == app.spec.ports.of(color)
        and canonical_ip(c.host_ip) in (app.spec.bindAddress, "")  # both canonical: `::1` is `0:0:0:0:0:0:0:1`
    )


def ours(app: BlueGreenApp, c: ContainerFact) -> bool:
    """Created by the controller for this app. Anything else under our name is never touched nor routed to."""
    return c.managed and c.labels.get(LABEL_APP) == app.name


def describe_container(c: ContainerFact | None) -> str:
    if c is None:
        return "missing"
    health = "" if c.healthy is None else (" healthy" if c.healthy else f" unhealthy ({c.health_detail})")
    restarts = f" restarted {c.restart_count}x" if c.restart_count else ""
    return f"{c.state}{health}{restarts} image={c.image} revision={c.revision or '-'}"


def plan(
    app: BlueGreenApp,
    obs: Observed,
    mem: Memory,
    now: float,
    revision_extra: dict[str, str] | None = None,
    failover: FailoverState | None = None,
    policy: BackoffPolicy = DEFAULT_POLICY,
) -> Plan:
    spec = app.spec
    want = spec.activeColor
    idle = other(want)
    serving = serving_color(app, obs.route, obs.include, obs.flag)
    extra, secrets_stale = hold_live_secrets(app, obs.containers[want], serving, revision_extra or {})
    revisions = {c: app.revision(c, extra) for c in COLORS}
    rev = revisions[want]

    actions: list[Action] = []
    blockers: list[Blocker] = []
    diffs: list[str] = []
    # Failover: the rule is fed the remembered failing-since time (None: not remembered, so no failover).
    fo = failover_rule(app, obs, mem, failover or FailoverState(), now)

    # A container under our name that we did not create (no managed-by/app labels) is someone else's:
    # never removed, started, stopped or switched to. The operator has to decide.
    foreign = {c: f for c in COLORS if (f := obs.containers[c]) is not None and not ours(app, f)}
    for c, f in foreign.items():
        blockers.append(
            Blocker(
                "ForeignContainer",
                f"container {f.name} ({f.id[:12]}, image {f.image}) was not created by {MANAGED_BY} (labels "
                f"{LABEL_MANAGED}={MANAGED_BY} and {LABEL_APP}={app.name} missing): it is left alone and gets no "
                f"traffic; remove or rename it by hand to let the controller manage {c}",
            )
        )

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

    # Post-switch verification failed for this revision: it gets no traffic until a retry is due (switchback.py).
    held = hold(app, obs, mem, now, rev, serving, policy)
    if want in foreign:
        diffs.append(f"container {app.container_name(want)}: not created by {MANAGED_BY}; left alone")
    elif held is not None:
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
            pass  # traffic goes to the other color by failover (steer below); the failed color is the operator's
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
        elif (cur is None or not good or not cur.running or (failure is not None and not cur.healthy)) and (
            short := capacity_blocker(app, obs.capacity, want, serving, obs.containers[serving] if serving else None)
        ) is not None:
            blockers.append(short)  # a new color would start (below) and the host cannot hold it: nothing starts
        else:
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

    # Deploy gates: a healthy new color whose checks or hook failed backs off before it is tried again.
    if ready and serving != want and want not in foreign and (gated := gate_backoff(app, mem, rev, now, policy)) is not None:
        blockers.append(gated)
        will_be_ready = False

    # Where traffic goes: the desired color once it is (or will have been proven) healthy; else stay put.
    target: Color | None = want if will_be_ready else serving
    if held is not None:
        target = held.target
    target = steer(app, obs, fo, target, serving, now, actions, blockers, diffs)
    if target in foreign:
        target = None  # never switch onto (nor rewrite files for) a container that is not ours
    if target is not None:
        desired_include = render_include(app, target)
        if obs.include != desired_include:
            diffs.append(f"upstream include {app.upstream_file}: {'missing' if obs.include is None else 'differs'}; want route to {target}")
            actions.append(SwitchRoute(target, f"write {app.upstream_file} for {target}, test, reload, confirm"))
        elif app.spec.nginx.switch == "flag" and not flag_says(obs.flag, target):
            # The flag is state like the include: wrong (deploy, rollback, hand edit) means switch it.
            # No reload when Nginx already follows the files (it serves what the flag said until now).
            follows = obs.route.reachable and obs.route.color == flag_color(obs.flag)
            verb = "create" if target == "green" else "remove"
            shown = "missing" if obs.flag is None else "present" if flag_says(obs.flag, "green") else describe_file(obs.flag)
            diffs.append(f"flag {app.flag_file}: {shown}; want route to {target}")
            actions.append(
                SwitchRoute(target, f"{verb} {app.flag_file}{'' if follows else ', test, reload'}, confirm", write_include=False, reload=not follows)
            )
        elif obs.route.reachable and obs.route.color != target:
            diffs.append(f"nginx routes to {obs.route.color or obs.route.upstream or 'nothing'}; want {target}")
            actions.append(SwitchRoute(target, "include is right but not live: test, reload, confirm", write_include=False))
        elif not obs.route.reachable:
            blockers.append(
                Blocker("RouteUnverified", f"cannot confirm which color Nginx serves: {obs.route.detail}; is Nginx running with the control server?")
            )
            target = None  # unknown: the marker stays as it is

    # The marker names what Nginx serves at every moment: fix it first when a switch is still to come,
    # so a deploy that fails half-way cannot leave it naming the wrong color.
    live = obs.route.color if obs.route.reachable else None
    marker = obs.marker_color  # what the marker will say when the step below runs
    if live is not None and live != target and marker != live:
        diffs.append(f"marker {app.marker_path}: {describe_file(obs.marker)}; Nginx serves {live}")
        actions.insert(0, WriteMarker(live, f"Nginx serves {live} until the switch"))
        marker = live

    if target is not None and marker != target:
        diffs.append(f"marker {app.marker_path}: {describe_file(obs.marker)}; want {target}")
        actions.append(WriteMarker(target, f"Nginx serves {target}"))

    # The idle color: kept for rollback, or stopped once traffic has left it.
    standby = obs.containers[idle]
    if (
        spec.standby == "stop" and target == want and standby is not None and standby.running and idle not in foreign
        and standby_may_stop(app, mem, serving, rev) and spec.preview is None
    ):
        diffs.append(f"container {app.container_name(idle)}: running; standby: stop")
        actions.append(StopContainer(idle, f"standby: stop; drain up to {spec.drainSeconds:g}s first"))

    # Deploy gates (spec.hooks, spec.checks) between healthy and the switch, and after it.
    add_gates(app, obs, mem, rev, serving, actions)

    # spec.preview on the idle color (controller/preview.py): the flag off first, its steps after the live color's.
    pv = plan_preview(app, obs, mem, now, extra, serving=serving, target=target, foreign=set(foreign), policy=policy)
    actions = [*pv.before, *actions, *pv.after]
    diffs += pv.diffs
    if pv.revision is not None:
        revisions[idle] = pv.revision  # the idle color's wanted revision (and failure memory key) is the preview's

    return Plan(
        app=app.name,
        generation=app.generation(),
        revisions=revisions,
        serving=serving,
        target=target,
        actions=tuple(actions),
        blockers=tuple(blockers),
        diffs=tuple(diffs),
        revision_extra=extra,
        secrets_stale=secrets_stale,
        failover=fo,
        preview=pv.state,
    )


def hold_live_secrets(
    app: BlueGreenApp, cur: ContainerFact | None, serving: Color | None, revision_extra: dict[str, str]
) -> tuple[dict[str, str], str | None]:
    """The revision inputs the desired color is held to, and why its secrets are stale (None: they are not).

    `revision_extra` carries the current secrets fingerprint (FINGERPRINT_KEY). The desired color, when it
    serves and runs, keeps the fingerprint on its own label when that is its *only* difference from the
    spec: replacing it would drop traffic, and a flip deploys the new secrets. With another difference
    too, the inputs stay as they are (the plan refuses: LiveColorOutdated) and the secrets are stale as well.
    """
    want = app.spec.activeColor
    current = revision_extra.get(FINGERPRINT_KEY)
    if cur is None or not cur.running or serving != want:
        return dict(revision_extra), None
    live_fp = cur.labels.get(LABEL_FINGERPRINT)
    if live_fp == current:
        return dict(revision_extra), None
    new = f"fingerprint {current}" if current else "no secrets"
    was = f"fingerprint {live_fp}" if live_fp else "no secrets"
    stale = (
        f"{app.container_name(want)} serves with secrets {was}, the spec now resolves {new}; "
        f"it is not restarted while live: set activeColor: {other(want)} to deploy them"
    )
    held = {k: v for k, v in revision_extra.items() if k != FINGERPRINT_KEY}
    if live_fp:
        held[FINGERPRINT_KEY] = live_fp
    if cur.revision != app.revision(want, held):
        return dict(revision_extra), stale
    return held, stale


def describe_file(content: str | None) -> str:
    """A marker (or flag) as the controller may show it: the color it names, "missing", or "garbage, ...".
    Never its bytes: a root process reads it, and --plan, --status and status.json are readable by others."""
    if content is None:
        return "missing"
    what = getattr(content, "what", None)  # drivers.files.Garbage: a link, a FIFO, a device, too big
    if isinstance(what, str):
        return f"garbage, {what}"
    value = content.strip()
    return value if value in COLORS else f"garbage, {len(content.encode('utf-8', errors='replace'))} bytes"


def _restarts(c: ContainerFact) -> str:
    if c.restarting:
        return " (restarting)"
    if c.restart_count is None:
        return ""
    return f" (restarted {c.restart_count}x since it was started)" if c.restart_count else ""
