"""Status: conditions and a report of desired against observed, rebuilt from observation each pass."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from controller.facts import ContainerFact, Observed
from controller.planner import Plan, describe_container, describe_file, matches
from controller.routing import configured_color, render_include
from controller.spec import COLORS, BlueGreenApp, other


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str

    def as_dict(self, transition: str) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": "True" if self.status else "False",
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": transition,
        }


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def conditions(
    app: BlueGreenApp,
    obs: Observed,
    plan: Plan,
    error: str | None,
    error_reason: str | None,
    progressing: bool,
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
    rollback = _rollback_ready(app, standby)
    rb = Condition(
        "RollbackReady",
        rollback,
        "StandbyAvailable" if rollback else "NoStandby",
        f"{app.container_name(idle)}: {describe_container(standby)}",
    )
    stale = Condition(
        "SecretsStale",
        secrets_stale is not None,
        "SecretsRotated" if secrets_stale else "Current",
        secrets_stale or "",
    )
    return [ready, prog, degraded, rb, stale]


def _rollback_ready(app: BlueGreenApp, c: ContainerFact | None) -> bool:
    if c is None:
        return False
    if app.spec.standby == "stop":
        return True  # starting it again is the rollback
    return c.running and c.healthy is True


def build_status(
    app: BlueGreenApp,
    obs: Observed,
    plan: Plan,
    conds: list[Condition],
    previous: dict[str, Any],
    last_deploy: dict[str, Any] | None,
    reconcile_id: str,
    now: float,
    secret_names: list[str] | None = None,
) -> dict[str, Any]:
    before = {c.get("type"): c for c in previous.get("conditions") or [] if isinstance(c, dict)}
    cond_out = []
    for c in conds:
        old = before.get(c.type)
        same = old is not None and old.get("status") == ("True" if c.status else "False")
        cond_out.append(c.as_dict(old["lastTransitionTime"] if same and old and "lastTransitionTime" in old else iso(now)))
    return {
        "app": app.name,
        "generation": plan.generation,
        "observedGeneration": plan.generation,
        "reconcileId": reconcile_id,
        "updatedAt": iso(now),
        "desired": {
            "image": app.spec.image,
            "activeColor": app.spec.activeColor,
            "revision": plan.revisions[app.spec.activeColor],
            "standby": app.spec.standby,
            **({"secrets": secret_names} if secret_names is not None else {}),
        },
        "observed": {
            "containers": {c: _container(app, obs.containers[c], plan.revisions[c], c) for c in COLORS},
            "route": {
                "reachable": obs.route.reachable,
                "color": obs.route.color,
                "upstream": obs.route.upstream,
                "detail": obs.route.detail,
            },
            "include": {
                "path": str(app.upstream_file),
                "present": obs.include is not None,
                "color": configured_color(app, obs.include, obs.flag),  # switch: flag -> the flag decides
                "managed": obs.include is not None and obs.include in {render_include(app, c) for c in COLORS},
            },
            # The color, or "garbage, N bytes": never the file's content (status.json is world-readable).
            "marker": {"path": str(app.marker_path), "value": describe_file(obs.marker) if obs.marker is not None else None},
            "serving": plan.serving,
        },
        "conditions": cond_out,
        "plan": {
            "actions": [a.describe() for a in plan.actions],
            "blockers": [{"reason": b.reason, "message": b.message} for b in plan.blockers],
            "diffs": list(plan.diffs),
        },
        "lastDeploy": last_deploy,
    }


def _container(app: BlueGreenApp, c: ContainerFact | None, revision: str, color: str) -> dict[str, Any] | None:
    if c is None:
        return None
    return {
        "name": c.name,
        "id": c.id[:12],
        "image": c.image,
        "imageId": c.image_id,
        "digest": running_digest(c),
        "state": c.state,
        "running": c.running,
        "healthy": c.healthy,
        "health": c.health_detail,
        "revision": c.revision,
        "upToDate": matches(app, color, c, revision),  # type: ignore[arg-type]
        "port": c.host_port,
    }


def running_digest(c: ContainerFact) -> str:
    """The digest the container really runs: its registry digest (repo@sha256:...) when known, else its image id."""
    repo = c.image.split("@", 1)[0]
    last = repo.rsplit("/", 1)[-1]
    repo = repo.rsplit(":", 1)[0] if ":" in last else repo
    return next((d for d in c.repo_digests if d.split("@", 1)[0] == repo), c.repo_digests[0] if c.repo_digests else c.image_id)


def render_text(status: dict[str, Any]) -> str:
    """Human-readable status for one app."""
    d, o = status["desired"], status["observed"]
    lines = [f"app {status['app']}  (generation {status['generation']}, reconcile {status['reconcileId']})"]
    lines.append(f"  desired   {d['activeColor']} {d['image']} revision {d['revision']} standby={d['standby']}")
    if d.get("secrets"):
        lines.append(f"  secrets   {', '.join(d['secrets'])}")  # names and SSM versions, never values
    for color in COLORS:
        c = o["containers"][color]
        if c is None:
            lines.append(f"  {color:<6}    -")
        else:
            health = "healthy" if c["healthy"] else ("-" if c["healthy"] is None else f"unhealthy ({c['health']})")
            flag = "" if c["upToDate"] else "  [differs from spec]"
            lines.append(f"  {color:<6}    {c['state']:<8} {health:<10} {c['image']} :{c['port']} revision {c['revision']}{flag}")
            if c.get("digest"):
                lines.append(f"  {'':<6}    digest {c['digest']}")
    r = o["route"]
    lines.append(f"  nginx     {'routes to ' + str(r['color']) if r['reachable'] else 'unreachable'}  ({r['detail']})")
    inc = o["include"]
    lines.append(f"  include   {inc['path']}: {('-> ' + str(inc['color'])) if inc['present'] else 'missing'}{'' if inc['managed'] or not inc['present'] else ' (edited)'}")
    m = o["marker"]
    lines.append(f"  marker    {m['path']}: {m['value'] if m['value'] is not None else 'missing'}")
    for c in status["conditions"]:
        msg = f"  {c['message']}" if c["message"] else ""
        lines.append(f"  {c['type']:<13} {c['status']:<5} {c['reason']}{msg}")
    for b in status["plan"]["blockers"]:
        lines.append(f"  blocked   {b['reason']}: {b['message']}")
    for a in status["plan"]["actions"]:
        lines.append(f"  pending   {a}")
    ld = status.get("lastDeploy")
    if ld:
        lines.append(f"  last deploy  {ld.get('at')} {ld.get('from')} -> {ld.get('color')} {ld.get('image')}: {ld.get('outcome')} {ld.get('message') or ''}".rstrip())
    return "\n".join(lines)
