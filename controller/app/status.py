"""Status: conditions and a report of desired against observed, rebuilt from observation each pass.

Typed records (`Status`, `Condition`, `LastDeploy`, ...); JSON only at the edge: `STATUS` (controller/kernel/document.py)
writes status.json and `--status --json` (keys and order unchanged) and reads the previous status.json back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from controller.app.plan import Plan, describe_container, describe_file, matches
from controller.app.routing import configured_color, render_include
from controller.spec.base import COLORS, Color, other, preview_app
from controller.store.documents import (
    Condition,
    ContainerStatus,
    Desired,
    IncludeStatus,
    LastDeploy,
    Limits,
    MarkerStatus,
    ObservedStatus,
    PlanStatus,
    RouteStatus,
    SourceStatus,
    Status,
    iso,
)
from controller.world.actions import Blocker
from controller.world.facts import LABEL_APP, ContainerFact, Observed

if TYPE_CHECKING:  # the models load with the first spec validated (none on a spec-cache hit)
    from controller.spec.app import BlueGreenApp


def conditions(
    app: BlueGreenApp,
    obs: Observed,
    plan: Plan,
    *,
    error: str | None = None,
    error_reason: str | None = None,
    progressing: bool = False,
    secrets_stale: str | None = None,
) -> list[Condition]:
    blocker = plan.blockers[0] if plan.blockers else None
    if plan.converged and not error:
        ready = Condition("Ready", True, "Converged", f"{app.spec.activeColor} serves {app.spec.image}")
    elif error:
        ready = Condition("Ready", False, error_reason or "Error", error)
    elif blocker:
        ready = Condition("Ready", False, blocker.reason, blocker.message)
    else:
        ready = Condition("Ready", False, "ChangesPending", "; ".join(a.describe() for a in plan.actions))

    if error:
        degraded = Condition("Degraded", True, error_reason or "Error", error)
    elif blocker:
        degraded = Condition("Degraded", True, blocker.reason, blocker.message)
    else:
        degraded = Condition("Degraded", False, "AsExpected", "")

    prog = (
        Condition("Progressing", True, "Applying", "; ".join(a.describe() for a in plan.actions))
        if progressing
        else Condition("Progressing", False, "Idle", "")
    )

    idle = other(app.spec.activeColor)
    standby = obs.containers[idle]
    rollback = _rollback_ready(app, standby) and app.spec.preview is None  # the idle color runs the preview
    rb = Condition(
        "RollbackReady",
        rollback,
        "StandbyAvailable" if rollback else "PreviewOnStandby" if app.spec.preview is not None else "NoStandby",
        f"{app.container_name(idle)}: {describe_container(standby)}",
    )
    stale = Condition(
        "SecretsStale",
        secrets_stale is not None,
        "SecretsRotated" if secrets_stale else "Current",
        secrets_stale or "",
    )
    out = [ready, prog, degraded, rb, stale, *_failed_over(app, plan)]
    if plan.preview is not None:  # spec.preview: its own condition; a failing preview degrades nothing else
        out.append(Condition("PreviewReady", plan.preview.ready, plan.preview.reason, plan.preview.message))
    if plan.maintenance is not None:  # controller/app/rules/maintenance.py: True while the site answers with the maintenance page
        out.append(Condition("Maintenance", plan.maintenance.on, plan.maintenance.reason, plan.maintenance.message))
    return out


def _failed_over(app: BlueGreenApp, plan: Plan) -> list[Condition]:
    """Condition FailedOver, for apps with spec.failover (controller/app/failover.py): True while traffic is held on
    the previous color; False with why not (or what is pending) otherwise."""
    d = plan.failover
    if app.spec.failover == "none" and d.kind == "off":
        return []
    if d.kind in ("switch", "held"):
        return [Condition("FailedOver", True, "FailedOver", d.message)]
    reason = {"pending": "FailoverPending", "unavailable": "FailoverUnavailable"}.get(d.kind, "NotFailedOver")
    return [Condition("FailedOver", False, reason, d.message)]


def _rollback_ready(app: BlueGreenApp, c: ContainerFact | None) -> bool:
    # A container under our name that we did not create is never rolled back to (ForeignContainer); one Docker
    # is restarting, or restarted since it was proven (when a pass inspected it), would first wait a full
    # stability window, which is no quick rollback.
    if c is None or not c.managed or c.labels.get(LABEL_APP) != app.name:
        return False
    if app.spec.standby == "stop":
        return True  # starting it again is the rollback
    return c.running and c.healthy is True and not c.restarting and not c.restart_count


def build_status(
    app: BlueGreenApp,
    obs: Observed,
    plan: Plan,
    *,
    conditions: Sequence[Condition],
    previous: Status | None,
    last_deploy: LastDeploy | None,
    reconcile_id: str,
    now: float,
    secret_names: Sequence[str] | None = None,
    source: SourceStatus | None = None,
) -> Status:
    """The status of this observation; a condition keeps its lastTransitionTime from `previous` while its status holds."""
    before = {c.type: c for c in previous.conditions} if previous is not None else {}
    stamped = []
    for c in conditions:
        old = before.get(c.type)
        stamped.append(replace(c, last_transition_time=old.last_transition_time if old is not None and old.status == c.status else iso(now)))
    return Status(
        app=app.name,
        generation=plan.generation,
        observed_generation=plan.generation,
        reconcile_id=reconcile_id,
        updated_at=iso(now),
        desired=Desired(
            image=app.spec.image,
            active_color=app.spec.activeColor,
            revision=plan.revisions[app.spec.activeColor],
            standby=app.spec.standby,
            secrets=tuple(secret_names) if secret_names is not None else None,
            resources=Limits.of(app),
        ),
        observed=ObservedStatus(
            containers={
                c: _container(app if c == app.spec.activeColor else preview_app(app), obs.containers[c], plan.revisions[c], c)
                for c in COLORS
            },
            route=RouteStatus(reachable=obs.route.reachable, color=obs.route.color, upstream=obs.route.upstream, detail=obs.route.detail),
            include=IncludeStatus(
                path=str(app.upstream_file),
                present=obs.include is not None,
                color=configured_color(app, obs.include, obs.flag),  # switch: flag -> the flag decides
                managed=obs.include is not None and obs.include in {render_include(app, c) for c in COLORS},
            ),
            # The color, or "garbage, N bytes": never the file's content (status.json is world-readable).
            marker=MarkerStatus(path=str(app.marker_path), value=describe_file(obs.marker) if obs.marker is not None else None),
            serving=plan.serving,
        ),
        conditions=tuple(stamped),
        plan=PlanStatus(
            actions=tuple(a.describe() for a in plan.actions),
            blockers=tuple(Blocker(b.reason, b.message) for b in plan.blockers),
            diffs=tuple(plan.diffs),
        ),
        last_deploy=last_deploy,
        source=source,
    )


def _container(app: BlueGreenApp, c: ContainerFact | None, revision: str, color: Color) -> ContainerStatus | None:
    if c is None:
        return None
    return ContainerStatus(
        name=c.name,
        id=c.id[:12],
        image=c.image,
        image_id=c.image_id,
        digest=running_digest(c),
        state=c.state,
        running=c.running,
        healthy=c.healthy,
        health=c.health_detail,
        revision=c.revision,
        up_to_date=matches(app, color, c, revision),
        port=c.host_port,
    )


def running_digest(c: ContainerFact) -> str:
    """The digest the container really runs: its registry digest (repo@sha256:...) when known, else its image id."""
    repo = c.image.split("@", 1)[0]
    last = repo.rsplit("/", 1)[-1]
    repo = repo.rsplit(":", 1)[0] if ":" in last else repo
    return next((d for d in c.repo_digests if d.split("@", 1)[0] == repo), c.repo_digests[0] if c.repo_digests else c.image_id)


def render_text(status: Status) -> str:
    """Human-readable status for one app."""
    d, o = status.desired, status.observed
    lines = [f"app {status.app}  (generation {status.generation}, reconcile {status.reconcile_id})"]
    if status.source is not None:
        lines += render_source(status.source)
    lines.append(f"  desired   {d.active_color} {d.image} revision {d.revision} standby={d.standby}")
    if d.secrets:
        lines.append(f"  secrets   {', '.join(d.secrets)}")  # names and SSM versions, never values
    if d.resources is not None:
        lines.append(f"  limits    {d.resources.describe()}")
    for color in COLORS:
        c = o.containers[color]
        if c is None:
            lines.append(f"  {color:<6}    -")
        else:
            health = "healthy" if c.healthy else ("-" if c.healthy is None else f"unhealthy ({c.health})")
            flag = "" if c.up_to_date else "  [differs from spec]"
            lines.append(f"  {color:<6}    {c.state:<8} {health:<10} {c.image} :{c.port} revision {c.revision}{flag}")
            if c.digest:
                lines.append(f"  {'':<6}    digest {c.digest}")
    r = o.route
    lines.append(f"  nginx     {'routes to ' + str(r.color) if r.reachable else 'unreachable'}  ({r.detail})")
    inc = o.include
    lines.append(f"  include   {inc.path}: {('-> ' + str(inc.color)) if inc.present else 'missing'}{'' if inc.managed or not inc.present else ' (edited)'}")
    m = o.marker
    lines.append(f"  marker    {m.path}: {m.value if m.value is not None else 'missing'}")
    for cond in status.conditions:
        msg = f"  {cond.message}" if cond.message else ""
        lines.append(f"  {cond.type:<13} {'True' if cond.status else 'False':<5} {cond.reason}{msg}")
    for b in status.plan.blockers:
        lines.append(f"  blocked   {b.reason}: {b.message}")
    for a in status.plan.actions:
        lines.append(f"  pending   {a}")
    ld = status.last_deploy
    if ld:
        lines.append(f"  last deploy  {ld.at} {ld.from_color} -> {ld.color} {ld.image}: {ld.outcome} {ld.message or ''}".rstrip())
    return "\n".join(lines)


def render_source(s: SourceStatus) -> list[str]:
    """The --status lines of the git source: the commit the app's spec was read at, and its author date and subject."""
    commit = f"commit {s.commit} ({s.author_date}) {s.subject}" if s.commit else "no commit in force"
    lines = [f"  source    {s.url} {s.ref} {s.path}: {commit}"]
    if s.signer:
        lines.append(f"  {'':<6}    signed by {s.signer}")
    if s.head and s.head != s.commit:
        lines.append(f"  {'':<6}    fetched {s.head}, not in force")
    if s.invalid is not None and s.invalid.commit:
        lines.append(f"  {'':<6}    spec invalid at {s.invalid.commit}: {s.invalid.message}")
    return lines
