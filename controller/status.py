"""Status: conditions and a report of desired against observed, rebuilt from observation each pass.

Typed records (`Status`, `Condition`, `LastDeploy`, ...); JSON only at the edge: `to_json()` for status.json
and `--status --json` (keys and order unchanged), `from_json()` to read the previous status.json back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from controller.actions import Blocker
from controller.facts import LABEL_APP, ContainerFact, Observed
from controller.jsonshape import Corrupt, Reader
from controller.planner import Plan, describe_container, describe_file, matches
from controller.routing import configured_color, render_include
from controller.specbase import COLORS, Color, other, preview_app

if TYPE_CHECKING:  # the models load with the first spec validated (none on a spec-cache hit)
    from controller.spec import BlueGreenApp


@dataclass(frozen=True)
class Condition:
    type: str  # Ready, Progressing, Degraded, RollbackReady, SecretsStale
    status: bool
    reason: str
    message: str
    last_transition_time: str = ""  # set by build_status: when `status` last changed

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": "True" if self.status else "False",
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": self.last_transition_time,
        }

    @classmethod
    def from_json(cls, r: Reader) -> Condition:
        status = r.text("status")
        if status not in ("True", "False"):
            raise Corrupt("conditions[].status: not True or False")
        return cls(r.text("type"), status == "True", r.text("reason"), r.text("message"), r.text("lastTransitionTime"))


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


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
    return out


def _failed_over(app: BlueGreenApp, plan: Plan) -> list[Condition]:
    """Condition FailedOver, for apps with spec.failover (controller/failover.py): True while traffic is held on
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


@dataclass(frozen=True)
class LastDeploy:
    """The last pass that deployed (created or started the wanted color, or switched to it); in memory.json."""

    at: str
    reconcile_id: str
    from_color: Color | None  # the color that served before
    color: Color
    image: str
    revision: str
    outcome: str  # success | failed
    message: str | None

    def to_json(self) -> dict[str, Any]:
        # Keys in the order `--status --json` always printed them (as read back from the sorted memory.json).
        return {
            "at": self.at,
            "color": self.color,
            "from": self.from_color,
            "image": self.image,
            "message": self.message,
            "outcome": self.outcome,
            "reconcileId": self.reconcile_id,
            "revision": self.revision,
        }

    @classmethod
    def from_json(cls, r: Reader) -> LastDeploy:
        return cls(
            at=r.text("at"),
            reconcile_id=r.text("reconcileId"),
            from_color=r.opt_color("from"),
            color=r.color("color"),
            image=r.text("image"),
            revision=r.text("revision"),
            outcome=r.text("outcome"),
            message=r.opt_text("message"),
        )


@dataclass(frozen=True)
class Desired:
    image: str
    active_color: Color
    revision: str
    standby: str
    secrets: tuple[str, ...] | None = None  # secret env names with their SSM versions, never values
    resources: Limits | None = None  # spec.resources limits as written (issue 14); None when none is set

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"image": self.image, "activeColor": self.active_color, "revision": self.revision, "standby": self.standby}
        if self.secrets is not None:
            out["secrets"] = list(self.secrets)
        if self.resources is not None:
            out["resources"] = self.resources.to_json()
        return out

    @classmethod
    def from_json(cls, r: Reader) -> Desired:
        return cls(
            r.text("image"), r.color("activeColor"), r.text("revision"), r.text("standby"), r.texts("secrets") if r.has("secrets") else None,
            Limits.from_json(res) if r.has("resources") and (res := r.opt_obj("resources")) is not None else None,
        )


@dataclass(frozen=True)
class Limits:
    """spec.resources in status: the limits both colors are created with (only those set appear)."""

    memory: str | None = None
    memory_reservation: str | None = None
    cpus: float | None = None
    pids_limit: int | None = None

    @classmethod
    def of(cls, app: BlueGreenApp) -> Limits | None:
        r = app.spec.resources
        if r is None or not r.limits():
            return None
        return cls(r.memory, r.memoryReservation, r.cpus, r.pidsLimit)

    def to_json(self) -> dict[str, Any]:
        out = {"memory": self.memory, "memoryReservation": self.memory_reservation, "cpus": self.cpus, "pidsLimit": self.pids_limit}
        return {k: v for k, v in out.items() if v is not None}

    @classmethod
    def from_json(cls, r: Reader) -> Limits:
        return cls(
            r.text("memory") if r.has("memory") else None,
            r.text("memoryReservation") if r.has("memoryReservation") else None,
            r.number("cpus", 0.0, 1024.0) if r.has("cpus") else None,
            r.integer("pidsLimit", 1) if r.has("pidsLimit") else None,
        )

    def describe(self) -> str:
        return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.to_json().items())


@dataclass(frozen=True)
class ContainerStatus:
    name: str
    id: str  # short id
    image: str
    image_id: str
    digest: str | None  # None only in files written before the digest was reported
    state: str
    running: bool
    healthy: bool | None
    health: str
    revision: str | None
    up_to_date: bool
    port: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "id": self.id,
            "image": self.image,
            "imageId": self.image_id,
            "digest": self.digest,
            "state": self.state,
            "running": self.running,
            "healthy": self.healthy,
            "health": self.health,
            "revision": self.revision,
            "upToDate": self.up_to_date,
            "port": self.port,
        }

    @classmethod
    def from_json(cls, r: Reader) -> ContainerStatus:
        return cls(
            name=r.text("name"),
            id=r.text("id"),
            image=r.text("image"),
            image_id=r.text("imageId"),
            digest=r.opt_text("digest") if r.has("digest") else None,
            state=r.text("state"),
            running=r.flag("running"),
            healthy=r.opt_flag("healthy"),
            health=r.text("health"),
            revision=r.opt_text("revision"),
            up_to_date=r.flag("upToDate"),
            port=r.opt_integer("port", 0, 65535),
        )


@dataclass(frozen=True)
class RouteStatus:
    reachable: bool
    color: Color | None
    upstream: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"reachable": self.reachable, "color": self.color, "upstream": self.upstream, "detail": self.detail}

    @classmethod
    def from_json(cls, r: Reader) -> RouteStatus:
        return cls(r.flag("reachable"), r.opt_color("color"), r.text("upstream"), r.text("detail"))


@dataclass(frozen=True)
class IncludeStatus:
    path: str
    present: bool
    color: Color | None
    managed: bool  # the include is one the controller renders (else: edited by hand)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "present": self.present, "color": self.color, "managed": self.managed}

    @classmethod
    def from_json(cls, r: Reader) -> IncludeStatus:
        return cls(r.text("path"), r.flag("present"), r.opt_color("color"), r.flag("managed"))


@dataclass(frozen=True)
class MarkerStatus:
    path: str
    value: str | None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "value": self.value}

    @classmethod
    def from_json(cls, r: Reader) -> MarkerStatus:
        return cls(r.text("path"), r.opt_text("value"))


@dataclass(frozen=True)
class ObservedStatus:
    containers: dict[Color, ContainerStatus | None]  # both colors, None when missing
    route: RouteStatus
    include: IncludeStatus
    marker: MarkerStatus
    serving: Color | None

    def to_json(self) -> dict[str, Any]:
        return {
            "containers": {c: (s.to_json() if s is not None else None) for c, s in self.containers.items()},
            "route": self.route.to_json(),
            "include": self.include.to_json(),
            "marker": self.marker.to_json(),
            "serving": self.serving,
        }

    @classmethod
    def from_json(cls, r: Reader) -> ObservedStatus:
        cs = r.obj("containers")
        return cls(
            containers={c: (ContainerStatus.from_json(o) if (o := cs.opt_obj(c)) is not None else None) for c in COLORS},
            route=RouteStatus.from_json(r.obj("route")),
            include=IncludeStatus.from_json(r.obj("include")),
            marker=MarkerStatus.from_json(r.obj("marker")),
            serving=r.opt_color("serving"),
        )


@dataclass(frozen=True)
class PlanStatus:
    actions: tuple[str, ...]  # described
    blockers: tuple[Blocker, ...]
    diffs: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "actions": list(self.actions),
            "blockers": [{"reason": b.reason, "message": b.message} for b in self.blockers],
            "diffs": list(self.diffs),
        }

    @classmethod
    def from_json(cls, r: Reader) -> PlanStatus:
        blockers = tuple(Blocker(b.text("reason"), b.text("message")) for b in r.objs("blockers"))
        return cls(r.texts("actions"), blockers, r.texts("diffs"))


@dataclass(frozen=True)
class SourceStatus:
    """The git source an app's spec comes from (--git-url; controller/source.py): never credentials."""

    url: str
    ref: str
    path: str
    commit: str | None  # the commit the app's spec in force was read at
    author_date: str | None
    subject: str | None
    signer: str | None
    head: str | None  # the last commit fetched (differs from `commit` while it is refused)
    last_fetch_ok_at: str | None
    invalid_commit: str | None = None  # a newer commit at which this app's spec is invalid
    invalid_message: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "ref": self.ref,
            "path": self.path,
            "commit": self.commit,
            "authorDate": self.author_date,
            "subject": self.subject,
            "signer": self.signer,
            "headCommit": self.head,
            "lastFetchSuccessAt": self.last_fetch_ok_at,
            "invalidAt": {"commit": self.invalid_commit, "message": self.invalid_message} if self.invalid_commit else None,
        }

    @classmethod
    def from_json(cls, r: Reader) -> SourceStatus:
        def opt(k: str) -> str | None:
            return r.opt_text(k) if r.has(k) else None

        inv = r.opt_obj("invalidAt") if r.has("invalidAt") else None
        return cls(
            r.text("url"), r.text("ref"), r.text("path"), opt("commit"), opt("authorDate"), opt("subject"), opt("signer"),
            opt("headCommit"), opt("lastFetchSuccessAt"),
            inv.opt_text("commit") if inv is not None and inv.has("commit") else None,
            inv.opt_text("message") if inv is not None and inv.has("message") else None,
        )


@dataclass(frozen=True)
class Status:
    """One app's status.json and `--status --json` entry: desired against observed, and conditions."""

    app: str
    generation: str
    observed_generation: str
    reconcile_id: str  # "status" when built by --status
    updated_at: str
    desired: Desired
    observed: ObservedStatus
    conditions: tuple[Condition, ...]
    plan: PlanStatus
    last_deploy: LastDeploy | None
    source: SourceStatus | None = None  # --git-url only

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def is_true(self, type_: str) -> bool:
        c = self.condition(type_)
        return c is not None and c.status

    def to_json(self) -> dict[str, Any]:
        """The JSON shape monitoring and scripts read (keys and their order as they always were)."""
        return {
            "app": self.app,
            "generation": self.generation,
            "observedGeneration": self.observed_generation,
            "reconcileId": self.reconcile_id,
            "updatedAt": self.updated_at,
            "desired": self.desired.to_json(),
            "observed": self.observed.to_json(),
            "conditions": [c.to_json() for c in self.conditions],
            "plan": self.plan.to_json(),
            "lastDeploy": self.last_deploy.to_json() if self.last_deploy is not None else None,
            **({"source": self.source.to_json()} if self.source is not None else {}),
        }

    @classmethod
    def from_json(cls, raw: object) -> Status:
        """Raises jsonshape.Corrupt unless `raw` has the shape `to_json` writes (unknown keys are ignored)."""
        r = Reader(raw)
        last = r.opt_obj("lastDeploy") if r.has("lastDeploy") else None
        return cls(
            app=r.text("app"),
            generation=r.text("generation"),
            observed_generation=r.text("observedGeneration"),
            reconcile_id=r.text("reconcileId"),
            updated_at=r.text("updatedAt"),
            desired=Desired.from_json(r.obj("desired")),
            observed=ObservedStatus.from_json(r.obj("observed")),
            conditions=tuple(Condition.from_json(c) for c in r.objs("conditions")),
            plan=PlanStatus.from_json(r.obj("plan")),
            last_deploy=LastDeploy.from_json(last) if last is not None else None,
            source=SourceStatus.from_json(r.obj("source")) if r.has("source") and r.opt_obj("source") is not None else None,
        )


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
    if s.invalid_commit:
        lines.append(f"  {'':<6}    spec invalid at {s.invalid_commit}: {s.invalid_message}")
    return lines
