"""The executor: gives effect to a plan's actions, in order, stopping at the first failure.

It decides nothing: the planner chose the actions; here each one is done as safely as it can be
(atomic writes, restore on a failed reload, health waits that can be interrupted).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.app.failover import WaitLiveOrFailover
from controller.app.maintenance import maintenance_probe_url, served
from controller.app.preview import PREVIEW_FLAG_CONTENT, preview_probe_url
from controller.app.routing import (
    FLAG_CONTENT,
    flag_says,
    health_url,
    render_include,
    route_fact,
    route_probe_url,
)
from controller.app.steps.gates import HANDLERS as GATE_HANDLERS
from controller.kernel.errors import (
    ControllerError,
    HealthCheckFailed,
    Interrupted,
    NginxError,
    RouteUnverified,
)
from controller.spec.base import Color, preview_app
from controller.world.actions import (
    Action,
    CreateContainer,
    CreatePreview,
    RemoveContainer,
    RemovePreview,
    StartContainer,
    StartPreview,
    StopContainer,
    SwitchMaintenance,
    SwitchPreview,
    SwitchRoute,
    WaitHealthy,
    WaitPreview,
    WriteMarker,
)
from controller.world.facts import (
    LABEL_APP,
    LABEL_COLOR,
    LABEL_MANAGED,
    LABEL_REVISION,
    MANAGED_BY,
    HookRecord,
    RouteFact,
)
from controller.world.protocol import ContainerRequest, RunState, World

if TYPE_CHECKING:  # the models load with the first spec validated (none on a spec-cache hit)
    from controller.spec.app import BlueGreenApp
    from controller.spec.resources import Resources


@dataclass
class Outcome:
    action: Action
    ok: bool
    seconds: float
    error: ControllerError | None = None


@dataclass
class ApplyResult:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def error(self) -> ControllerError | None:
        return next((o.error for o in self.outcomes if o.error is not None), None)

    @property
    def failed(self) -> Action | None:
        return next((o.action for o in self.outcomes if not o.ok), None)


@dataclass(frozen=True)
class Context:
    """What the executor works with, built whole for each pass's actions (nothing is set on it afterwards)."""

    app: BlueGreenApp
    world: World
    log: Any  # structlog BoundLogger
    record: Callable[[Action, bool, str], None]  # history sink
    should_stop: Callable[[], bool] = lambda: False
    env: dict[str, str] = field(default_factory=dict, repr=False)  # spec env + secrets, resolved by the caller
    revision_extra: dict[str, str] = field(default_factory=dict)
    verify_interval: float = 0.05
    # Deploy gates (controller/app/steps/gates.py): a hook's run, remembered in the state dir, and read back.
    remember_hook: Callable[[HookRecord], None] = lambda r: None
    hook_record: Callable[[str, str], HookRecord | None] = lambda phase, revision: None
    # The secrets fingerprint whose values are registered with the redactor: output of a run of it may be read.
    secrets: str | None = None


def apply(ctx: Context, actions: tuple[Action, ...] | list[Action]) -> ApplyResult:
    result = ApplyResult()
    for action in actions:
        if ctx.should_stop() and not isinstance(action, WriteMarker):
            # Stop between steps only; a switch already made still gets its marker written.
            result.outcomes.append(Outcome(action, False, 0.0, Interrupted("stop requested; the next pass resumes here")))
            break
        started = time.monotonic()
        log = ctx.log.bind(color=action.color, action=action.verb)
        log.info("action.start", reason=action.reason)
        try:
            _HANDLERS[type(action)](ctx, action)
        except Superseded as e:
            log.info("action.superseded", reason=str(e))
            ctx.record(action, True, str(e))
            result.outcomes.append(Outcome(action, True, time.monotonic() - started))
            break
        except ControllerError as e:
            took = time.monotonic() - started
            log.error("action.failed", error=str(e), seconds=round(took, 3))
            ctx.record(action, False, str(e))
            result.outcomes.append(Outcome(action, False, took, e))
            break
        took = time.monotonic() - started
        log.info("action.done", seconds=round(took, 3))
        ctx.record(action, True, action.reason)
        result.outcomes.append(Outcome(action, True, took))
    return result


def _remove(ctx: Context, a: Action) -> None:
    ctx.world.remove_container(ctx.app.container_name(a.color))


def _create(ctx: Context, a: Action) -> None:
    assert isinstance(a, CreateContainer)
    app = ctx.app
    s = app.spec
    labels = {
        **s.labels,
        LABEL_APP: app.name,
        LABEL_COLOR: a.color,
        LABEL_REVISION: a.revision,
        LABEL_MANAGED: MANAGED_BY,
        # Deploy-time revision inputs (the secrets' fingerprint: a hash of versions, never values).
        **{f"bluegreen.{k}": v for k, v in ctx.revision_extra.items()},
    }
    env = {**s.env, **ctx.env, "BLUEGREEN_APP": app.name, "BLUEGREEN_COLOR": a.color, "BLUEGREEN_REVISION": a.revision}
    ctx.world.create_container(
        ContainerRequest(
            name=app.container_name(a.color),
            image=s.image,
            labels=labels,
            env=env,
            container_port=s.containerPort,
            host_ip=s.bindAddress,
            host_port=s.ports.of(a.color),
            network=s.network,
            restart_policy=s.restartPolicy,
            stop_timeout=s.stopTimeoutSeconds,
            **_limits(s.resources),
        )
    )


def _limits(r: Resources | None) -> dict[str, int | None]:
    """spec.resources as ContainerRequest fields (issue 14); none set: Docker's defaults."""
    if r is None:
        return {}
    return {"memory": r.memory_bytes, "memory_reservation": r.reservation_bytes, "nano_cpus": r.nano_cpus, "pids_limit": r.pidsLimit}


def _start(ctx: Context, a: Action) -> None:
    ctx.world.start_container(ctx.app.container_name(a.color))


def _wait(ctx: Context, a: Action) -> None:
    """Poll until the color passes, then keep polling for `stableSeconds`: an image that answers UP and
    crashes a second later (bad config, OOM at warm-up) must fail here, not after it took traffic. A restart
    by Docker during the window (restart policy: the probes may miss the short gap) fails it too: the
    container is inspected when the window opens and when it closes, and must be the same run."""
    assert isinstance(a, WaitHealthy)
    hc = ctx.app.spec.healthCheck
    w = ctx.world
    name = ctx.app.container_name(a.color)
    # The wait runs on the monotonic clock; a deadline the plan set on the wall clock (from Docker's StartedAt) leaves
    # at most timeoutSeconds: a wall clock stepped back never makes it wait a day (issue 19 #10).
    begun = w.monotonic()
    left = hc.timeoutSeconds if a.deadline is None else min(max(0.0, a.deadline - w.now()), hc.timeoutSeconds)
    deadline = begun + left
    url = health_url(ctx.app, a.color)
    last_note = begun
    probes = 0
    passing_since: float | None = None
    run: RunState | None = None  # the container's run when the window opened
    while True:
        result = w.probe_health(url, hc.expectStatus, hc.requestTimeoutSeconds)
        probes += 1
        now = w.monotonic()
        if result.ok:
            if passing_since is None:
                passing_since, run = now, w.run_state(name)
                _same_run(name, run, run, hc.path)
            if now - passing_since >= hc.stableSeconds:
                _same_run(name, run, w.run_state(name), hc.path)
                return
        elif passing_since is not None:
            if not _running(w, name):
                raise HealthCheckFailed(f"{name} passed {hc.path}, then exited within stableSeconds ({hc.stableSeconds:g}s)")
            _same_run(name, run, w.run_state(name), hc.path)
            passing_since = None  # flapping: start the stability window again
        if not result.ok and probes % 5 == 0 and not _running(w, name):
            raise HealthCheckFailed(f"{name} exited while waiting for {hc.path} (last probe: {result.detail})")
        if now >= deadline and passing_since is None:
            raise HealthCheckFailed(
                f"{name} did not pass {hc.path} within {hc.timeoutSeconds:g}s (last probe: {result.detail})"
            )
        if ctx.should_stop():
            raise Interrupted(f"stop requested while waiting for {name} to become healthy; traffic untouched")
        if now - last_note >= 5:
            ctx.log.info("health.waiting", color=a.color, elapsed=round(now - begun, 1), left=round(deadline - now, 1), last=result.detail)
            last_note = now
        pause = hc.intervalSeconds if passing_since is None else min(hc.intervalSeconds, max(0.05, hc.stableSeconds / 4))
        w.sleep(min(pause, max(0.05, deadline - now)) if passing_since is None else pause)


class Superseded(Exception):
    """What the rest of the plan was for no longer holds (a pending failover whose live color passes again):
    the action counts as done, the plan stops there, and the next pass plans from a fresh observation."""


def _wait_live(ctx: Context, a: Action) -> None:
    """Failover pending (controller/app/failover.py): poll the live color until the failover instant. It passing
    again (it served: one pass is enough, as for the live color everywhere) calls the switch off; so does the
    target failing its probe, which is probed in the last interval before the instant so the switch follows
    at once (it never goes to a color that has not just passed)."""
    assert isinstance(a, WaitLiveOrFailover) and a.deadline is not None and a.to is not None
    hc, w = ctx.app.spec.healthCheck, ctx.world
    url, to_url = health_url(ctx.app, a.color), health_url(ctx.app, a.to)
    fresh = hc.intervalSeconds + hc.requestTimeoutSeconds  # how old the target's last pass may be at the switch
    passed_at: float | None = None
    while True:
        result = w.probe_health(url, hc.expectStatus, hc.requestTimeoutSeconds)
        if result.ok:
            raise Superseded(f"{ctx.app.container_name(a.color)} passes again: failover called off")
        now = w.monotonic()  # the failover instant is on the monotonic clock
        if now + hc.intervalSeconds >= a.deadline and (passed_at is None or now - passed_at > fresh):
            target = w.probe_health(to_url, hc.expectStatus, hc.requestTimeoutSeconds)
            if not target.ok:
                raise Superseded(f"{ctx.app.container_name(a.to)} fails its health check ({target.detail}): no failover now")
            passed_at = now = w.monotonic()
        if now >= a.deadline:
            ctx.log.warning("failover.due", color=a.color, last=result.detail, to=a.to)
            return
        if ctx.should_stop():
            raise Interrupted(f"stop requested while waiting for {ctx.app.container_name(a.color)} to pass again; traffic untouched")
        w.sleep(max(0.01, min(hc.intervalSeconds, a.deadline - now)))


def _same_run(name: str, opened: RunState | None, now: RunState | None, path: str) -> None:
    """The stability window holds only for one uninterrupted run of the container."""
    if opened is None or now is None or not now.running or now.restarting:
        raise HealthCheckFailed(f"{name} passed {path}, then stopped running within its stability window (crash loop?)")
    if now.restart_count != opened.restart_count or now.started_at != opened.started_at:
        raise HealthCheckFailed(
            f"{name} passed {path}, then restarted within its stability window "
            f"(restart count {opened.restart_count} -> {now.restart_count}): a crash loop gets no traffic"
        )


def _running(w: World, name: str) -> bool:
    return any(c.name == name and c.running for c in w.list_containers())


def _switch(ctx: Context, a: Action) -> None:
    assert isinstance(a, SwitchRoute)
    app, w = ctx.app, ctx.world
    ng = app.spec.nginx
    path = app.upstream_file
    previous = w.read_file(path)
    reload = a.write_include or a.reload

    def restore() -> None:
        if previous is None:
            w.remove_file(path)
        else:
            w.write_file(path, previous)

    if a.write_include:
        w.write_file(path, render_include(app, a.color))
    try:
        if reload:
            w.run(ng.testCommand, ng.commandTimeoutSeconds)
        if ng.switch == "flag":
            # After the test (a rejected include leaves everything as it was), before the reload (a flag-mode
            # include loaded under a stale flag would route to that flag's color). The flag acts at once and
            # only ever names a color that has passed its health check, so it is never rolled back.
            _set_flag(ctx, a.color)
        if reload:
            w.run(ng.reloadCommand, ng.commandTimeoutSeconds)
    except NginxError:
        if a.write_include:
            restore()  # the old config is still live: keep the file saying so
        raise
    _confirm(ctx, a.color, restore if a.write_include else None)


def _set_flag(ctx: Context, color: Color) -> None:
    w, flag = ctx.world, ctx.app.flag_file
    current = w.read_file(flag)
    if flag_says(current, color):
        return
    if color == "green":
        w.write_file(flag, FLAG_CONTENT)  # atomic rename: the site's `if (-f ...)` sees it or not, never half
    else:
        w.remove_file(flag)


def _confirm(ctx: Context, color: Color, restore: Callable[[], None] | None) -> None:
    """A reload is asynchronous and may be rejected by the running master: ask Nginx what it serves."""
    app, w = ctx.app, ctx.world
    ng = app.spec.nginx
    url = route_probe_url(app)
    deadline = w.now() + ng.verifyTimeoutSeconds
    while True:
        fact = route_fact(app, w.probe_route(url, app.spec.healthCheck.requestTimeoutSeconds))
        if fact.reachable and fact.color == color:
            return
        if w.now() >= deadline:
            if restore is not None:
                restore()
            seen = fact.color or fact.upstream or fact.detail
            raise RouteUnverified(
                f"Nginx still routes {app.name} to {seen} {ng.verifyTimeoutSeconds:g}s after the switch "
                f"(check its error log; switch: flag needs the flag-aware site of nginx/)"
                + ("; include restored" if restore is not None else "")
            )
        w.sleep(ctx.verify_interval)


def _marker(ctx: Context, a: Action) -> None:
    ctx.world.write_file(ctx.app.marker_path, f"{a.color}\n")


def _stop(ctx: Context, a: Action) -> None:
    assert isinstance(a, StopContainer)
    app, w = ctx.app, ctx.world
    port = app.spec.ports.of(a.color)
    deadline = w.now() + app.spec.drainSeconds
    # Let in-flight requests and open streams on the old color finish; end early once none is left.
    while w.now() < deadline and w.connections_to(port) > 0:
        if ctx.should_stop():
            raise Interrupted(f"stop requested while draining {app.container_name(a.color)}")
        w.sleep(0.2)
    w.stop_container(app.container_name(a.color), app.spec.stopTimeoutSeconds)


# spec.preview (controller/app/preview.py) ------------------------------------------------------------------
def _create_preview(ctx: Context, a: Action) -> None:
    assert isinstance(a, CreatePreview)
    # The idle color from the preview's image and env; labels, ports, network: exactly as a deploy makes them.
    _create(replace(ctx, app=preview_app(ctx.app)), CreateContainer(a.color, a.reason, revision=a.revision))


def _switch_preview(ctx: Context, a: Action) -> None:
    """Create or remove the preview flag, then ask the control server where a preview request goes. The flag acts
    at once (the site tests it per request; no reload) and names only a proven preview, so it is never restored."""
    assert isinstance(a, SwitchPreview)
    app = ctx.app
    fact = _flag_file(ctx, app.preview_flag_file, PREVIEW_FLAG_CONTENT if a.on else None, preview_probe_url(app),
                      lambda f: f.reachable and f.color == a.color)  # fmt: skip
    if fact is not None:
        seen = fact.color or fact.upstream or fact.detail
        raise RouteUnverified(
            f"preview requests for {app.name} reach {seen or 'nothing'}, not {a.color}, "
            f"{app.spec.nginx.verifyTimeoutSeconds:g}s after {'creating' if a.on else 'removing'} {app.preview_flag_file} "
            "(the preview needs the site and control route of nginx/ from this version)"
        )


def _switch_maintenance(ctx: Context, a: Action) -> None:
    """Create (with the message) or remove the maintenance flag, then ask the control server whether the site answers
    with the maintenance page. The flag acts at once (the site tests it per request; no reload). A maintenance that
    cannot be confirmed on is removed again: the site is left serving, as it was."""
    assert isinstance(a, SwitchMaintenance)
    app = ctx.app
    flag = app.maintenance_flag_file
    fact = _flag_file(ctx, flag, a.message if a.on else None, maintenance_probe_url(app), lambda f: served(f) is a.on)
    if fact is not None:
        raise RouteUnverified(
            f"the site of {app.name} is {'not ' if a.on else 'still '}in maintenance "
            f"{app.spec.nginx.verifyTimeoutSeconds:g}s after {'creating' if a.on else 'removing'} {flag} ({fact.detail}; "
            "maintenance needs the site and control route of nginx/ from this version)"
        )


def _flag_file(ctx: Context, flag: Path, content: str | None, url: str, done: Callable[[RouteFact], bool]) -> RouteFact | None:
    """Write `flag` with `content` (atomic: the site sees the old file or the new one) or remove it (None), then ask
    the control server at `url` until `done` (None returned) or verifyTimeoutSeconds pass: then a flag just created
    is removed again (the site is left as it was) and the last answer returned."""
    app, w = ctx.app, ctx.world
    if content is None:
        w.remove_file(flag)
    elif w.read_file(flag) != content:
        w.write_file(flag, content)
    deadline = w.now() + app.spec.nginx.verifyTimeoutSeconds
    while True:
        fact = route_fact(app, w.probe_route(url, app.spec.healthCheck.requestTimeoutSeconds))
        if done(fact):
            return None
        if w.now() >= deadline:
            if content is not None:
                w.remove_file(flag)
            return fact
        w.sleep(ctx.verify_interval)


_HANDLERS: dict[type[Action], Callable[[Context, Any], None]] = {
    RemoveContainer: _remove,
    CreateContainer: _create,
    StartContainer: _start,
    WaitHealthy: _wait,
    WaitLiveOrFailover: _wait_live,
    SwitchRoute: _switch,
    WriteMarker: _marker,
    StopContainer: _stop,
    RemovePreview: _remove,
    CreatePreview: _create_preview,
    StartPreview: _start,
    WaitPreview: _wait,
    SwitchPreview: _switch_preview,
    SwitchMaintenance: _switch_maintenance,
}

# Deploy gates: hooks and checks (placed by controller/app/rules/gates.py), executed by controller/app/steps/gates.py.
_HANDLERS.update(GATE_HANDLERS)
