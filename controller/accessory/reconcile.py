"""The accessory loop (issue 13): observe -> `accessory_planner.plan_accessory` -> apply, for every accessory of
a directory pass, before its apps. Also the facts the apps' pass needs: which dependencies are not healthy
(`not_ready`, gathered for `rules/depends_on.py`) and which app networks exist or are declared.

History lines carry `"kind": "Accessory"`; status goes to the state dir's apps/<name>/status.json (names are
unique across both kinds, specdir checks it); metrics are `bluegreen_accessory_*` on the run's registry.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from controller.accessory.plan import AccessoryObserved, AccessoryPlan, Step, plan_accessory
from controller.app.requeue import result_of
from controller.kernel.errors import ControllerError, DockerError, HealthCheckFailed, InvalidInput, one_line
from controller.kernel.logs import get_logger
from controller.spec.accessory import Accessory
from controller.spec.app import BlueGreenApp
from controller.store.documents import iso
from controller.store.state import HistoryEntry, Ledger, StateStore
from controller.world.facts import (
    FINGERPRINT_KEY,
    LABEL_ACCESSORY,
    LABEL_ACCESSORY_IMAGE,
    LABEL_CONFIG,
    LABEL_FIELDS,
    LABEL_MANAGED,
    LABEL_ONEOFF,
    MANAGED_BY,
    AccessoryFact,
    retired_name,
)
from controller.world.protocol import AccessoryRequest, HealthResult, OneOff, World
from controller.world.secrets import SecretSource, fingerprint

MAX_PASSES = 3
ACCESSORY_UP = "bluegreen_accessory_up"
ACCESSORY_OUTDATED = "bluegreen_accessory_outdated"
ACCESSORY_BLOCKED = "bluegreen_accessory_blocked"


class AccessoryMetrics:
    """Per-accessory gauges on the run's registry (next to `Metrics`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.up = Gauge(ACCESSORY_UP, "1 when the accessory's container runs and passes its health check.", ["accessory"], registry=registry)
        self.outdated = Gauge(ACCESSORY_OUTDATED, "1 when the accessory's container is out of date with its spec.", ["accessory"], registry=registry)
        self.blocked = Gauge(ACCESSORY_BLOCKED, "1 when a blocker keeps the accessory from its spec.", ["accessory", "reason"], registry=registry)


@dataclass
class AccessoryResult:
    accessory: str
    result: str  # converged | progressing | blocked | degraded | error
    plan: AccessoryPlan | None = None
    healthy: bool = False
    error: str | None = None
    actions_done: list[str] = field(default_factory=list)

    @property
    def converged(self) -> bool:
        return self.result == "converged"


class AccessoryRunner:
    def __init__(
        self,
        world: World,
        store: StateStore,
        registry: CollectorRegistry | None = None,
        secrets: SecretSource | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.world = world
        self.store = store
        self.ledger = Ledger(store)
        self.metrics = AccessoryMetrics(registry) if registry is not None else None
        self.secrets = secrets
        self.should_stop = should_stop
        self.accessories: dict[str, Accessory] = {}

    # Observation --------------------------------------------------------------------------------------------
    def _index(self, names: Iterable[str]) -> dict[str, AccessoryFact]:
        """Containers by name: each accessory's, and the one an interrupted recreate left as <name>-retired."""
        named = frozenset(names)
        wanted = named | {retired_name(n) for n in named}
        return {c.name: c for c in self.world.list_accessories(wanted) if c.name in wanted}

    def _health(self, acc: Accessory, c: AccessoryFact) -> HealthResult:
        hc = acc.spec.healthCheck
        if hc is None:
            return HealthResult(True, "running (no healthCheck)")
        timeout = min(5.0, hc.timeoutSeconds)
        if hc.command is not None:
            return self.world.check_command(c.name, hc.command, timeout)
        port = hc.tcp if hc.tcp is not None else hc.http.port if hc.http is not None else 0
        published = acc.spec.ports.get(str(port))
        host = acc.spec.bindAddress if published is not None else None
        target = published if published is not None else port
        if hc.tcp is not None:
            return self.world.check_tcp(c.name, acc.spec.network, host, target, timeout)
        assert hc.http is not None
        return self.world.check_http(c.name, acc.spec.network, host, target, hc.http.path, hc.http.expectStatus, timeout)

    def observe(self, acc: Accessory, index: dict[str, AccessoryFact] | None = None) -> AccessoryObserved:
        idx = index if index is not None else self._index([acc.name])
        c = idx.get(acc.name)
        healthy: bool | None = None
        detail = ""
        if c is not None and c.ours(acc.name) and c.running:
            h = self._health(acc, c)
            healthy, detail = h.ok, h.detail
        return AccessoryObserved(
            name=acc.name,
            container=c,
            volumes=frozenset(self.world.list_volumes()) if acc.spec.volumes else frozenset(),
            networks=frozenset(self.world.list_networks()) if acc.spec.network else frozenset(),
            healthy=healthy,
            health_detail=detail,
            retired=idx.get(retired_name(acc.name)),
            # What a recreate does to data (--plan's note) depends on the volumes the image declares.
            image_volumes=self.world.image_volumes(acc.spec.image) if acc.spec.update == "recreate" else None,
        )

    def _extra(self, acc: Accessory) -> tuple[dict[str, str], list[Any]]:
        if acc.spec.secrets is None or self.secrets is None:
            return {}, []
        refs = self.secrets.versions(acc.spec.secrets.ssm)
        return {FINGERPRINT_KEY: fingerprint(refs)}, list(refs)

    def plan(self, acc: Accessory, index: dict[str, AccessoryFact] | None = None) -> AccessoryPlan:
        extra, _ = self._extra(acc)
        return plan_accessory(acc, self.observe(acc, index), extra)

    # Dependencies (an app's dependsOn) and networks ------------------------------------------------------------
    def not_ready(self, names: Iterable[str]) -> dict[str, str]:
        """Each named accessory that is not running and healthy now, with why (observed at this moment)."""
        names = list(names)
        if not names:
            return {}
        index = self._index(names)
        out: dict[str, str] = {}
        for n in names:
            acc = self.accessories.get(n)
            c = index.get(n)
            if acc is None:
                out[n] = "not declared"
            elif c is None or not c.ours(n):
                out[n] = "no container of ours"
            elif not c.running:
                out[n] = c.state or "stopped"
            else:
                h = self._health(acc, c)
                if not h.ok:
                    out[n] = f"unhealthy: {h.detail}"
        return out

    def dependencies(self, app: BlueGreenApp) -> dict[str, str]:
        return self.not_ready(app.spec.dependsOn or [])

    def network_problems(self, apps: list[BlueGreenApp]) -> dict[str, str]:
        """Apps whose spec.network is neither an existing network nor one an accessory declares (it is created)."""
        declared = {a.spec.network for a in self.accessories.values() if a.spec.network}
        wanted = {a.name: a.spec.network for a in apps if a.spec.network and a.spec.network not in declared}
        if not wanted:
            return {}
        existing = self.world.list_networks()
        return {
            name: f"spec.network: {net!r} is neither an existing Docker network nor declared by an accessory"
            for name, net in wanted.items()
            if net not in existing
        }

    # Converge ------------------------------------------------------------------------------------------------
    def reconcile_all(self, accessories: list[Accessory]) -> list[AccessoryResult]:
        self.accessories = {a.name: a for a in accessories}
        return [self.reconcile(a) for a in sorted(accessories, key=lambda a: a.name)]

    def reconcile(self, acc: Accessory, should_stop: Callable[[], bool] | None = None) -> AccessoryResult:
        """Converge `acc`; `should_stop` (default: the constructor's) is checked between steps and in the wait."""
        stop = should_stop or self.should_stop
        rid = uuid.uuid4().hex[:12]
        log = get_logger(accessory=acc.name, image=acc.spec.image, reconcile_id=rid)
        self.accessories.setdefault(acc.name, acc)
        done: list[str] = []
        error: ControllerError | None = None
        p: AccessoryPlan | None = None
        try:
            extra, refs = self._extra(acc)
            env: dict[str, str] | None = None
            for pass_no in range(MAX_PASSES):
                p = plan_accessory(acc, self.observe(acc), extra)
                if pass_no == 0:
                    log.info("accessory.plan", actions=[s.describe() for s in p.actions], blockers=[b.reason for b in p.blockers])
                if not p.actions or error is not None:
                    break
                if env is None:
                    env = dict(acc.spec.env)
                    if refs and self.secrets is not None and acc.spec.secrets is not None:
                        env.update(self.secrets.values(acc.spec.secrets.ssm, refs))
                for step in p.actions:
                    if stop():
                        break
                    try:
                        self._apply(acc, step, p.config, extra, env, stop)
                    except ControllerError as e:
                        self._record(acc, rid, step, ok=False, message=str(e))
                        log.error("accessory.step_failed", step=step.describe(), error=str(e))
                        error = e
                        break
                    self._record(acc, rid, step, ok=True, message=step.reason)
                    done.append(step.describe())
        except ControllerError as e:
            error = e
        res = result_of(error, converged=p.converged, blockers=p.blockers) if p is not None else "error"
        result = AccessoryResult(acc.name, res, p, healthy=bool(p and p.healthy), error=str(error) if error else None, actions_done=done)
        self._status(acc, result, rid)
        log.info("accessory.done", result=res, actions=len(done), error=result.error)
        return result

    def _labels(self, acc: Accessory, config: str, extra: dict[str, str]) -> dict[str, str]:
        return {
            LABEL_MANAGED: MANAGED_BY,
            LABEL_ACCESSORY: acc.name,
            LABEL_CONFIG: config,
            LABEL_FIELDS: ",".join(f"{k}={v}" for k, v in acc.config_fields(extra).items()),
            LABEL_ACCESSORY_IMAGE: acc.spec.image,
        }

    def _apply(self, acc: Accessory, step: Step, config: str, extra: dict[str, str], env: dict[str, str], stop: Callable[[], bool]) -> None:
        s = acc.spec
        w = self.world
        own = {LABEL_MANAGED: MANAGED_BY, LABEL_ACCESSORY: acc.name}
        if step.verb == "EnsureNetwork":
            if step.target not in w.list_networks():
                w.create_network(step.target, own)
        elif step.verb == "EnsureVolume":
            if step.target not in w.list_volumes():
                w.create_volume(step.target, own)
        elif step.verb == "Backup":
            assert s.backup is not None
            job = OneOff(
                name=f"{acc.name}-backup",
                image=s.image,
                command=list(s.backup.command),
                volumes={**dict(step.keep), **s.volumes},
                labels={**own, LABEL_ONEOFF: "backup"},
                env=env,
                network=s.network,
            )
            r = w.run_oneoff(job, float(s.backup.timeoutSeconds))
            if r.exit_code != 0:
                why = "timed out" if r.exit_code is None else f"exit {r.exit_code}"
                raise DockerError(f"{acc.name}: backup failed ({why}: {r.output}); nothing recreated, the old container keeps running")
        elif step.verb == "StopAccessory":
            w.stop_container(acc.name, s.stopTimeoutSeconds)
        elif step.verb == "RetireAccessory":
            w.rename_container(acc.name, retired_name(acc.name))
        elif step.verb == "RemoveAccessory":
            w.remove_container(step.target)
        elif step.verb == "CreateAccessory":
            w.create_container(
                AccessoryRequest(
                    name=acc.name,
                    image=s.image,
                    labels=self._labels(acc, config, extra),
                    env=env,
                    ports={int(k): v for k, v in s.ports.items()},
                    host_ip=s.bindAddress,
                    volumes={**dict(step.keep), **s.volumes},  # the old container's anonymous volumes, same paths
                    command=list(s.command) if s.command is not None else None,
                    network=s.network,
                    aliases=(acc.name,) if s.network else (),
                    restart_policy=s.restartPolicy,
                )
            )
        elif step.verb == "StartAccessory":
            w.start_container(acc.name)
        elif step.verb == "WaitAccessoryHealthy":
            self._wait(acc, stop)
        else:  # pragma: no cover - the planner's verbs are listed above
            raise InvalidInput(f"unknown accessory step {step.verb}")

    def _wait(self, acc: Accessory, stop: Callable[[], bool]) -> None:
        hc = acc.spec.healthCheck
        timeout = hc.timeoutSeconds if hc is not None else 10.0
        interval = hc.intervalSeconds if hc is not None else 0.5
        deadline = self.world.now() + timeout  # the world's clock: the in-memory world's advances with its sleep
        last = "not checked"
        while True:
            c = self._index([acc.name]).get(acc.name)
            if c is not None and c.running:
                h = self._health(acc, c)
                if h.ok:
                    return
                last = h.detail
            else:
                last = c.state if c is not None else "gone"
            if self.world.now() >= deadline or stop():
                raise HealthCheckFailed(f"{acc.name}: not healthy after {timeout:g}s: {one_line(last)}")
            self.world.sleep(interval)

    def _record(self, acc: Accessory, rid: str, step: Step, *, ok: bool, message: str) -> None:
        outcome = "ok" if ok else "failed"
        at = iso(self.world.now())
        self.ledger.record(HistoryEntry(at, acc.name, rid, step.verb, None, acc.spec.image, outcome, message, kind="Accessory", target=step.target))

    def _status(self, acc: Accessory, r: AccessoryResult, rid: str) -> None:
        doc = status_json(acc, r, rid, self.world.now())
        self.store.save_accessory_status(acc.name, doc)
        m = self.metrics
        if m is not None:
            p = r.plan
            m.up.labels(accessory=acc.name).set(1 if r.result == "converged" or (p is not None and p.healthy and not p.actions) else 0)
            m.outdated.labels(accessory=acc.name).set(1 if p is not None and p.outdated and r.result != "converged" else 0)
            for reason in ("AccessoryOutdated", "AccessoryNotOurs", "AccessoryUnhealthy", "AccessoryRetiredKept"):
                blocked = p is not None and any(b.reason == reason for b in p.blockers)
                m.blocked.labels(accessory=acc.name, reason=reason).set(1 if blocked else 0)


def status_json(acc: Accessory, r: AccessoryResult, rid: str, now: float) -> dict[str, Any]:
    p = r.plan
    return {
        "kind": "Accessory",
        "accessory": acc.name,
        "image": acc.spec.image,
        "generation": acc.generation(),
        "config": p.config if p is not None else None,
        "result": r.result,
        "healthy": r.healthy,
        "ready": r.result == "converged",
        "diffs": list(p.diffs) if p is not None else [],
        "blockers": [{"reason": b.reason, "message": b.message} for b in p.blockers] if p is not None else [],
        "actionsDone": r.actions_done,
        "conditions": conditions(r),
        "error": r.error,
        "reconcileId": rid,
        "observedAt": iso(now),
    }


def conditions(r: AccessoryResult) -> list[dict[str, Any]]:
    """Ready and Degraded, shaped like an app's conditions (type, status, reason, message)."""
    p = r.plan
    blocker = p.blockers[0] if p is not None and p.blockers else None
    ready = r.result == "converged" and r.healthy
    degraded = r.error is not None or blocker is not None
    reason = r.result if r.error is not None else blocker.reason if blocker is not None else "AsExpected"
    message = r.error if r.error is not None else blocker.message if blocker is not None else ""
    return [
        {"type": "Ready", "status": ready, "reason": "Healthy" if ready else r.result, "message": "" if ready else message},
        {"type": "Degraded", "status": degraded, "reason": reason if degraded else "AsExpected", "message": message},
    ]


def render_plan(p: AccessoryPlan) -> str:
    notes = [f"  note: {n}" for n in p.notes]
    if p.converged:
        return "\n".join([f"{p.accessory}: in sync (accessory{'' if p.healthy else ', not healthy'})", *notes])
    lines = [f"{p.accessory}: {len(p.diffs)} differences, {len(p.actions)} actions (accessory)", *notes]
    lines += [f"  ~ {d}" for d in p.diffs]
    lines += [f"  {i}. {s.describe()}" for i, s in enumerate(p.actions, 1)]
    lines += [f"  ! blocked: {b.reason}: {b.message}" for b in p.blockers]
    return "\n".join(lines)


def plan_json(p: AccessoryPlan) -> dict[str, Any]:
    return {
        "kind": "Accessory",
        "app": p.accessory,
        "generation": p.generation,
        "config": p.config,
        "inSync": p.converged,
        "healthy": p.healthy,
        "diffs": list(p.diffs),
        "actions": [
            {"action": s.verb, "target": s.target, "reason": s.reason, **({"keep": {v: path for v, path in s.keep}} if s.keep else {})}
            for s in p.actions
        ],
        "blockers": [{"reason": b.reason, "message": b.message} for b in p.blockers],
        "notes": list(p.notes),
    }
