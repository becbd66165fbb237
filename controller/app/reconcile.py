"""The reconciler: gather → decide → apply for one app, repeated until the world plans nothing.

Level-triggered: each pass starts from a fresh observation, so a crash, a kill -9 or a hand edit
between two passes is simply part of what the next pass observes. Every pass reads its inputs once
(`gather.gather`: the observation, the memory, the failover state) and plans once (`decide.decide`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from controller.app.apply import Context, apply
from controller.app.decide import PassInputs, decide
from controller.app.failover import FAILED_OVER, failed_over, intend
from controller.app.gates import gates_fingerprint
from controller.app.gather import Dependencies, gather, no_dependencies, with_images
from controller.app.maintenance import cleanup_after_failure
from controller.app.plan import Plan
from controller.app.requeue import NOT_RUN, Requeue, result_of
from controller.app.requeue import decide as requeue_after
from controller.app.status import build_status, conditions
from controller.app.steps.prune import prune
from controller.app.steps.verify import Verifier
from controller.kernel.backoff import BackoffPolicy
from controller.kernel.errors import CheckFailed, ControllerError, HookFailed, Interrupted
from controller.kernel.logs import get_logger
from controller.spec.base import other, preview_app
from controller.store.documents import (
    Condition,
    FailedOver,
    HookStatus,
    LastDeploy,
    SourceStatus,
    Status,
    iso,
)
from controller.store.metrics import Metrics
from controller.store.releases import (
    EVENT_OF,
    Began,
    Origin,
    Releases,
    Taken,
    begin,
    classify,
    event,
    local_actor,
)
from controller.store.state import HistoryEntry, Ledger, StateStore
from controller.world.actions import (
    PREVIEW_ACTIONS,
    Action,
    CreateContainer,
    CreatePreview,
    ImageRemoval,
    RemoveContainer,
    RemoveHook,
    RunCheck,
    RunHook,
    StartContainer,
    StopContainer,
    SwitchRoute,
    WaitHealthy,
    WriteMarker,
)
from controller.world.facts import NO_SECRETS, ContainerFact, HookRecord, Memory, Observed, hook_key
from controller.world.protocol import World
from controller.world.secrets import NoSecrets, Resolved, Resolver
from controller.world.verification import window_closed

if TYPE_CHECKING:  # the models load with the first spec validated (none on a spec-cache hit)
    from controller.spec.app import BlueGreenApp

MAX_PASSES = 4


class SourceView(Protocol):
    """Where the specs come from, for status and history (controller/runtime/source.py's GitSource with --git-url)."""

    def history_fields(self, app: str) -> dict[str, Any]: ...

    def status_for(self, app: str) -> tuple[SourceStatus, Condition]: ...

    def origin(self, app: str) -> Origin: ...


@dataclass
class AppResult:
    app: str
    result: str  # one of metrics.RESULTS
    plan: Plan | None = None
    observed: Observed | None = None
    status: Status | None = None  # None when the pass ended before an observation (Docker unreachable)
    error: str | None = None
    actions_done: list[str] = field(default_factory=list)
    requeue: Requeue = NOT_RUN  # when to come back (requeue.decide); watch mode obeys it

    @property
    def converged(self) -> bool:
        return self.result == "converged"


def drift_kind(action: Action, obs: Observed) -> str:
    if isinstance(action, (CreateContainer, RemoveContainer, StartContainer, WaitHealthy)):
        return "container"
    if isinstance(action, SwitchRoute):
        return "include" if obs.route.color == action.color else "route"
    if isinstance(action, WriteMarker):
        return "marker"
    if isinstance(action, StopContainer):
        return "standby"
    return "container"


@dataclass(frozen=True)
class _Run:
    """The passes of one converge, as they ended: the last inputs and plan, and what was done."""

    inputs: PassInputs
    plan: Plan
    memory: Memory  # the last gathered, with what the passes remembered since
    hooks: _Hooks
    resolved: Resolved
    last_deploy: LastDeploy | None
    error: ControllerError | None
    done: list[str]


class _Hooks:
    """The hook runs the executor reads and records (controller/app/steps/gates.py): memory's at the start of the pass,
    plus those recorded since, so that the pass never reads memory.json again."""

    def __init__(self, store: StateStore, app: str, known: Mapping[str, HookRecord]) -> None:
        self.store = store
        self.app = app
        self.known = dict(known)

    def remember(self, rec: HookRecord) -> None:
        self.store.record_hook(self.app, rec)
        self.known[rec.key] = rec

    def get(self, phase: str, revision: str) -> HookRecord | None:
        return self.known.get(hook_key(phase, revision))


class Reconciler:
    def __init__(
        self,
        world: World,
        store: StateStore,
        metrics: Metrics | None = None,
        *,
        backoff_base: float = 60.0,
        backoff_max: float = 3600.0,
        should_stop: Callable[[], bool] = lambda: False,
        resolver: Resolver | None = None,
        source: SourceView | None = None,
        dependencies: Dependencies | None = None,
        notify: Callable[[dict[str, Any]], None] | None = None,
        prune_every: float = 0.0,
    ) -> None:
        self.world = world
        self.store = store
        self.metrics = metrics or Metrics()
        self.policy = BackoffPolicy(backoff_base, backoff_max)
        self.should_stop = should_stop  # the default of each reconcile's `should_stop`
        self.resolver: Resolver = resolver or NoSecrets()
        self.streaks: dict[str, int] = {}  # app -> consecutive passes backed off for (requeue.decide)
        self.source = source
        self.prune_every = prune_every  # seconds between image sweeps of a pass that changed nothing (0: every pass)
        self.ledger = Ledger(store, lambda app: source.history_fields(app).get("commit") if source is not None else None)
        self.verifier = Verifier(world, store, self.metrics, self.ledger)
        self.dependencies = dependencies or no_dependencies  # dependsOn (issue 13): the accessory runner's, gathered every pass
        # Release events (controller/releases.py event): queued, never waited on (drivers/notify.py posts them).
        self.notify: Callable[[dict[str, Any]], None] = notify or (lambda body: None)
        self.actor = local_actor()

    # Read-only ---------------------------------------------------------------------------
    def inputs(
        self, app: BlueGreenApp, resolved: Resolved, containers: dict[str, ContainerFact] | None = None, *, images: bool = False
    ) -> PassInputs:
        """What a pass of `app` decides on, gathered by this reconciler's world, state dir and accessory runner."""
        return gather(
            app,
            self.world,
            self.store,
            revision_extra=resolved.revision_extra,
            dependencies=self.dependencies,
            containers=containers,
            images=images,
            policy=self.policy,
        )

    def plan_only(
        self, app: BlueGreenApp, containers: dict[str, ContainerFact] | None = None, *, images: bool = False
    ) -> tuple[Plan, Observed, Resolved]:
        """`--plan` (`images`: with what pruning would remove), `--status`, release's checks: nothing is written."""
        resolved = self.resolver(app)
        inputs = self.inputs(app, resolved, containers, images=images)
        return decide(inputs), inputs.observed, resolved

    def status_only(self, app: BlueGreenApp, containers: dict[str, ContainerFact] | None = None) -> Status:
        p, obs, resolved = self.plan_only(app, containers)
        previous = self.store.load_status(app.name)
        # Keep the last pass's error visible: status must say why the last run failed.
        prev_error = previous.condition("Degraded") if previous is not None else None
        err = (
            prev_error.message
            if previous is not None and prev_error is not None and prev_error.status
            and previous.generation == p.generation and not p.blockers and p.actions
            else None
        )
        conds = conditions(
            app, obs, p, error=err, error_reason=prev_error.reason if err and prev_error else None, secrets_stale=p.secrets_stale
        )
        src, conds = self._with_source(app.name, conds)
        return build_status(
            app,
            obs,
            p,
            conditions=conds,
            previous=previous,
            last_deploy=self.store.load_last_deploy(app.name),
            reconcile_id="status",
            now=self.world.now(),
            secret_names=resolved.names,
            source=src,
        )

    # Converge ----------------------------------------------------------------------------
    def reconcile(
        self, app: BlueGreenApp, containers: dict[str, ContainerFact] | None = None, *, should_stop: Callable[[], bool] | None = None
    ) -> AppResult:
        """Converge `app`; `should_stop` (default: the constructor's) is checked between steps and inside waits."""
        stop = should_stop or self.should_stop
        rid = uuid.uuid4().hex[:12]
        log = get_logger(app=app.name, image=app.spec.image, reconcile_id=rid)
        started = time.monotonic()
        result = AppResult(app=app.name, result="error")
        try:
            result = self._converge(app, containers, rid, log, stop)
        except ControllerError as e:
            log.error("reconcile.error", error=str(e), kind=type(e).__name__)
            result = AppResult(app=app.name, result="error", error=str(e), requeue=self.requeue(app.name, None, e))
        finally:
            m = self.metrics
            m.reconcile_runs.labels(app=app.name, result=result.result).inc()
            m.reconcile_duration.labels(app=app.name).observe(time.monotonic() - started)
            m.last_run.set(time.time())
            if result.converged:
                m.last_success.labels(app=app.name).set(time.time())
            m.app_converged.labels(app=app.name).set(1 if result.converged else 0)
        return result

    def _converge(
        self, app: BlueGreenApp, containers: dict[str, ContainerFact] | None, rid: str, log: Any, stop: Callable[[], bool]
    ) -> AppResult:
        verify = app.spec.verify is not None
        if verify and not window_closed(self.store.load_window(app.name)):
            # A window a killed or stopped run left open is judged first, for the time left: the passes below would
            # otherwise wait on the health of a new color that is failing (the very thing the window judges).
            left = self.inputs(app, self.resolver(app), containers)
            self.verifier.run(app, decide(left), left.observed, log, rid, stop)
            containers = None  # observed again below
        done: list[str] = []
        while True:
            run = self._passes(app, containers, rid, log, stop)
            done += run.done
            if not verify or run.error is not None:
                break
            # Post-switch verification: an open window (this run's cutover, or one a killed run left) is judged to
            # its verdict here, then the world is converged once more (switched back, or the standby stopped).
            closed = self.verifier.run(app, run.plan, run.inputs.observed, log, rid, stop)
            if closed is None or closed.state not in ("passed", "failed"):
                break
            verify, containers = False, None
        return self._finish(app, run, done, rid, log, stop)

    def _passes(
        self, app: BlueGreenApp, containers: dict[str, ContainerFact] | None, rid: str, log: Any, stop: Callable[[], bool]
    ) -> _Run:
        """Gather, decide, apply, until a pass plans nothing, fails, or MAX_PASSES are used up."""
        resolved = self.resolver(app)
        last_deploy = self.store.load_last_deploy(app.name)
        error: ControllerError | None = None
        done: list[str] = []
        env: dict[str, str] | None = None  # spec env + secret values; loaded (and the image present) before a create
        registered: str | None = None  # the secrets (fingerprint) registered with the redactor: their output may be read

        def record(action: Action, ok: bool, message: str) -> None:
            image = preview_app(app).spec.image if isinstance(action, PREVIEW_ACTIONS) else app.spec.image
            outcome = "ok" if ok else "failed"
            self.ledger.record(HistoryEntry(iso(self.world.now()), app.name, rid, action.verb, action.color, image, outcome, message))

        def context(p: Plan, hooks: _Hooks) -> Context:
            return Context(
                app=app,
                world=self.world,
                log=log,
                record=record,
                should_stop=stop,
                env=env if env is not None else {},
                revision_extra=p.revision_extra,
                remember_hook=hooks.remember,  # deploy gates: a hook's run is remembered in the state dir
                hook_record=hooks.get,
                secrets=registered,
            )

        for pass_no in range(MAX_PASSES):
            inputs = self.inputs(app, resolved, containers if pass_no == 0 else None)
            if inputs.failover_changed:
                self.store.save_failover(app.name, inputs.failover)  # failing-since survives passes and cron runs
            if inputs.failed_over is not None:
                self._failed_over(app, inputs.failed_over, rid, log)
            mem, obs = inputs.memory, inputs.observed
            hooks = _Hooks(self.store, app.name, mem.hooks)
            p = decide(inputs)
            if pass_no == 0:
                log.info("reconcile.plan", actions=[a.describe() for a in p.actions], blockers=[b.reason for b in p.blockers], serving=p.serving)
            if error is not None and (cleanup := cleanup_after_failure(p.actions)):
                # A failed pass still turns maintenance off (a failed migration: the old color serves again).
                outcome = apply(context(p, hooks), cleanup)
                done += [o.action.describe() for o in outcome.outcomes if o.ok]
                continue
            if not p.actions and error is None:
                self._observed_release(app, obs)
            if not p.actions or error is not None:
                break
            if any(isinstance(a, (CreateContainer, RunHook)) for a in p.actions) and env is None:
                # Before any action, so that a failed pull or secret read changes nothing.
                try:
                    self.world.ensure_image(app.spec.image)
                    env = self.resolver.load_values(app, resolved)
                    registered = resolved.fingerprint or NO_SECRETS
                except ControllerError as e:
                    error = e
                    continue
            if any(isinstance(a, (RemoveHook, RunCheck)) for a in p.actions) and registered is None:
                # Output a secret may be in is read: the values are registered with the redactor first (the source
                # does that as they arrive). When they cannot be had, the output is not kept (steps/gates.py).
                try:
                    self.resolver.read_values(app, resolved)
                    registered = resolved.fingerprint or NO_SECRETS
                except ControllerError as e:
                    log.warning("secrets.unavailable_for_redaction", error=str(e))
            if any(isinstance(a, CreatePreview) for a in p.actions) and app.spec.preview is not None:
                # The preview's image, pulled like a deploy's; one that cannot be had fails the preview only.
                try:
                    self.world.ensure_image(app.spec.preview.image)
                    if env is None:
                        env = self.resolver.load_values(app, resolved)
                        registered = resolved.fingerprint or NO_SECRETS
                except ControllerError as e:
                    self._preview_failed(app, p, mem, e, log)
                    continue
            ctx = context(p, hooks)
            self._write_status(app, obs, p, resolved, hooks.known, last_deploy=last_deploy, rid=rid, progressing=True)
            if mem.converged_generation == p.generation:
                for a in p.actions:
                    self.metrics.drift_repairs.labels(app=app.name, kind=drift_kind(a, obs)).inc()
            self.verifier.note_switch(app, p, obs, mem)
            if p.failover.kind in ("switch", "pending") and any(isinstance(a, SwitchRoute) and a.color == p.failover.color for a in p.actions):
                # Announced before the switch runs: the next observation that finds traffic moved records it.
                self.store.save_failover(app.name, intend(app, inputs.failover, p.failover, self.world.now()))
            outcome = apply(ctx, p.actions)
            self.verifier.switched(app, outcome)
            done += [o.action.describe() for o in outcome.outcomes if o.ok]
            error = outcome.error
            self._released(app, p, obs, outcome.outcomes, log)
            preview_error = None
            if isinstance(outcome.failed, PREVIEW_ACTIONS) and error is not None and not isinstance(error, Interrupted):
                # spec.preview failed: remembered against its revision (backoff), PreviewReady False; not the pass's error.
                preview_error, error = error, None
            mem, last_deploy = self._remember(app, p, obs, failed=outcome.failed, error=error, mem=mem, last_deploy=last_deploy, rid=rid)
            if preview_error is not None:
                self._preview_failed(app, p, mem, preview_error, log)
            if error is not None:
                # Re-observe once so status shows the world as the failure left it, then stop.
                continue
        # `inputs` and `p` are from the last observation: the world as we leave it.
        return _Run(inputs, p, mem, hooks, resolved, last_deploy, error, done)

    def _finish(self, app: BlueGreenApp, run: _Run, done: list[str], rid: str, log: Any, stop: Callable[[], bool]) -> AppResult:
        """The reconcile's end: its result, converged generation, pruning, status, metrics and requeue."""
        p, obs, mem, error = run.plan, run.inputs.observed, run.memory, run.error
        # Interrupted: stopped by SIGTERM between steps; the deploy resumes on the next run.
        res = result_of(error, converged=p.converged, blockers=p.blockers)
        if res == "converged":
            if mem.converged_generation != p.generation:
                mem = replace(mem, converged_generation=p.generation)
                self.store.save_memory(app.name, mem, None)
            self._prune(app, run.inputs, rid, log, stop, changed=bool(done))
        message = str(error) if error else None
        status = self._write_status(
            app, obs, p, run.resolved, run.hooks.known, last_deploy=run.last_deploy, rid=rid, error=message,
            reason=type(error).__name__ if error else None,
        )
        self._export(app, obs, status)
        failure = mem.failures.get(p.revisions[app.spec.activeColor])
        retry_at = failure.next_retry_at(self.policy) if failure is not None else None
        requeue = self.requeue(app.name, p, error, retry_at)
        log.info("reconcile.done", result=res, actions=len(done), error=message, requeue_after=requeue.after)
        return AppResult(app=app.name, result=res, plan=p, observed=obs, status=status, error=message, actions_done=done, requeue=requeue)

    # Failover (controller/app/failover.py) -------------------------------------------------
    def _failed_over(self, app: BlueGreenApp, done: FailedOver, rid: str, log: Any) -> None:
        """A failover observed done (controller/app/failover.py `track`), its state saved: recorded and counted, once."""
        self.metrics.failovers.labels(app=app.name).inc()
        self.ledger.record(HistoryEntry(iso(done.at), app.name, rid, FAILED_OVER, done.to_color, app.spec.image, "ok", done.reason))
        log.warning("failover.done", color=done.to_color, reason=done.reason)

    # Image pruning (controller/app/steps/prune.py) ------------------------------------------------------
    def _prune(self, app: BlueGreenApp, inputs: PassInputs, rid: str, log: Any, stop: Callable[[], bool], *, changed: bool) -> None:
        """After a converged pass: housekeeping that never fails it (an error is logged; the next pass plans again).

        A sweep runs after a pass that changed something, else once `prune_every` seconds have passed since the
        last completed one (remembered in the state dir): a no-op cron run does not list the images."""
        now = self.world.now()
        if self.prune_every > 0 and not changed:
            last = self.store.load_swept_at(app.name)
            if last is not None and 0 <= now - last < self.prune_every:
                return
        try:
            ledger = self.store.load_releases(app.name)
            inputs = with_images(inputs, self.world, ledger)  # the same plan, with the images gathered
            if inputs.releases is not None and inputs.releases != ledger:
                self.store.save_releases(app.name, inputs.releases)  # the images first seen now
            removals = decide(inputs).prune
        except ControllerError as e:
            log.warning("image.prune_unobserved", error=str(e))
            return

        failed = False

        def record(r: ImageRemoval, outcome: str, message: str) -> None:
            nonlocal failed
            failed = failed or outcome == "failed"
            at = iso(self.world.now())
            self.ledger.record(HistoryEntry(at, app.name, rid, "RemoveImage", None, ", ".join(r.references), outcome, message, image_id=r.image_id))

        prune(self.world, removals, record=record, should_stop=stop, log=log)
        if self.prune_every > 0 and not failed and not stop():  # else due again on the next pass
            self.store.save_swept_at(app.name, now)

    # Releases (controller/releases.py) -----------------------------------------------------------
    def _origin(self, app: str) -> Origin:
        """The git commit the app's spec came from (--git-url), else the user who ran the controller."""
        o = self.source.origin(app) if self.source is not None else Origin()
        return o if o.commit is not None else Origin(actor=self.actor)

    def _begin(self, app: BlueGreenApp, ledger: Releases, taken: Taken, began: Began, detail: str | None, log: Any) -> None:
        after = begin(ledger, taken, began, self._origin(app.name), detail=detail)
        if after is ledger:
            return
        self.store.save_releases(app.name, after)
        new, previous = after.releases[-1], ledger.live
        log.info("release.began", release=new.number, revision=new.revision, color=new.color, began=began,
                 ended=previous.number if previous is not None else None)
        if began != "observed":
            self.notify(event(EVENT_OF[began], app.name, taken.at, release=new, previous=ledger.live, figures=detail))

    def _released(self, app: BlueGreenApp, p: Plan, obs: Observed, outcomes: list[Any], log: Any) -> None:
        """After a pass's actions: a confirmed switch to another revision began a release (and ended the one before).
        Called after the switch and its marker: the ledger and the notification never delay a switch."""
        want = app.spec.activeColor
        for o in outcomes:
            a = o.action
            if not (o.ok and isinstance(a, SwitchRoute)):
                continue
            c = obs.containers[a.color]
            if a.color == want:
                revision, image = p.revisions[want], app.spec.image
            elif c is not None and c.revision is not None:
                revision, image = c.revision, c.image  # a switch back or a failover: what the color runs
            else:
                continue
            ledger = self.store.load_releases(app.name)
            live = ledger.live
            if a.color == p.serving and (live is None or live.revision == revision):
                continue  # the route repaired, or the live color recreated on a ledger that has no release yet
            # (A live color recreated with a new revision, the route on it all along, is a release too.)
            failover = p.failover.kind in ("switch", "pending") and p.failover.color == a.color
            began = classify(ledger, revision, desired=a.color == want and not failover, failover=failover)
            detail = None
            if began == "switch-back":
                w = self.store.load_window(app.name)
                detail = w.figures if w is not None and w.state == "failed" else None
            elif began == "failover":
                done = failed_over(app, self.store.load_failover(app.name), self.world.now(), self.world.monotonic(), self.world.boot_id())
                detail = done.reason if done is not None else None
            same = c is not None and c.revision == revision
            taken = Taken(revision, image, a.color, self.world.now(),
                          digest=c.repo_digests[0] if same and c is not None and c.repo_digests else None,
                          image_id=c.image_id if same and c is not None and c.image_id else None)
            self._begin(app, ledger, taken, began, detail, log)

    def _observed_release(self, app: BlueGreenApp, obs: Observed) -> None:
        """Level-triggered: the ledger names live what Nginx serves. A release the controller did not see begin (a
        run killed between its switch and the ledger, a switch by hand, the first run of this version) is recorded
        as "observed"; the live release's digest and image id are filled in once its container is seen."""
        color = obs.route.color if obs.route.reachable else None
        c = obs.containers[color] if color is not None else None
        if color is None or c is None or c.revision is None or not c.running or not c.ours(app.name):
            return
        ledger = self.store.load_releases(app.name)
        live = ledger.live
        if live is None or live.revision != c.revision or live.color != color:
            taken = Taken(c.revision, c.image, color, self.world.now(), c.repo_digests[0] if c.repo_digests else None, c.image_id or None)
            self._begin(app, ledger, taken, "observed", None, get_logger(app=app.name))
        elif (live.digest is None and c.repo_digests) or (live.image_id is None and c.image_id):
            filled = replace(live, digest=live.digest or (c.repo_digests[0] if c.repo_digests else None), image_id=live.image_id or c.image_id or None)
            self.store.save_releases(app.name, replace(ledger, releases=[*ledger.releases[:-1], filled]))

    def requeue(self, app: str, p: Plan | None, error: BaseException | None, retry_at: float | None = None) -> Requeue:
        """When to come back for `app` after a pass (or an attempt that did not run: `p` None), counting its failures."""
        r = requeue_after(p, error, now=self.world.now(), retry_at=retry_at, failures=self.streaks.get(app, 0))
        self.streaks[app] = r.failures
        return r

    def _preview_failed(self, app: BlueGreenApp, p: Plan, mem: Memory, error: ControllerError, log: Any) -> None:
        """Hold a failed preview against its revision, like a failed deploy (controller/app/rules/preview.py rule 3);
        `mem` is the memory as the pass has it (gathered, and what it remembered since)."""
        idle = other(app.spec.activeColor)
        rev = p.revisions[idle]
        log.error("preview.failed", color=idle, revision=rev, error=str(error), kind=type(error).__name__)
        if app.spec.preview is None:
            return  # removing a leftover preview flag failed: no preview revision to hold it against (retried next pass)
        self.store.save_memory(app.name, mem.bump(rev, idle, self.world.now(), type(error).__name__, str(error)), None)

    def _remember(
        self,
        app: BlueGreenApp,
        p: Plan,
        obs: Observed,
        *,
        failed: Action | None,
        error: ControllerError | None,
        mem: Memory,
        last_deploy: LastDeploy | None,
        rid: str,
    ) -> tuple[Memory, LastDeploy | None]:
        if isinstance(error, Interrupted):
            # A stop between steps is no failed deploy: nothing is held against the revision.
            if failed is None or failed not in p.actions or not any(
                isinstance(a, SwitchRoute) for a in p.actions[: p.actions.index(failed)]
            ):
                return mem, last_deploy
            error = None  # the switch and its marker were done before the stop: that cutover succeeded
        now = self.world.now()
        want = app.spec.activeColor
        rev = p.revisions[want]
        # To the desired color only: a switch back from a revision that failed verification is no deploy.
        cutover = any(isinstance(a, SwitchRoute) and a.color != obs.route.color and a.color == want for a in p.actions)
        deploying = cutover or any(isinstance(a, (CreateContainer, StartContainer)) and a.color == want for a in p.actions)
        if isinstance(failed, WaitHealthy) and failed.color == want:
            self.metrics.health_check_failures.labels(app=app.name, color=want).inc()
            if deploying:
                # Held against the revision only when this pass started it: a live container killed
                # while a pass waited on it is restarted by the next pass, not backed off.
                mem = mem.bump(rev, want, now, "HealthCheckFailed", str(error))
        elif isinstance(failed, (RunCheck, RunHook)) and failed.color == want and isinstance(error, (CheckFailed, HookFailed)):
            # A failed check or hook is a failed deploy: remembered against the revision and the gates it failed
            # with, retried after backoff (or at once when the gates change: gateplan.gate_backoff).
            mem = mem.bump(rev, want, now, type(error).__name__, str(error), gates=gates_fingerprint(app))
        elif error is None and p.target == want:
            # Only a pass that leaves the desired color proven (a stable WaitHealthy, or steady) and live
            # clears the failure: a marker fixed while backing off is no proof (issue 10 item 1).
            mem = replace(mem, failures={r: f for r, f in mem.failures.items() if r != rev})
        if deploying:
            ok = error is None
            if cutover:
                self.metrics.cutovers.labels(app=app.name, result="success" if ok else "failed").inc()
            if not ok:
                self.notify(event("deploy-failed", app.name, now, image=app.spec.image, revision=rev, message=str(error), origin=self._origin(app.name)))
            last_deploy = LastDeploy(
                at=iso(now),
                reconcile_id=rid,
                from_color=p.serving,
                color=want,
                image=app.spec.image,
                revision=rev,
                outcome="success" if ok else "failed",
                message=None if ok else str(error),
            )
        # Forget failures of revisions that no longer matter, so the file cannot grow forever: never one the spec
        # names, nor one a color still runs (failover and switch-back must still know it failed: issue 19 #4).
        # A color this pass replaced (its container recreated or removed, the pass not failed) no longer runs the
        # revision it was observed with.
        replaced = {a.color for a in p.actions if isinstance(a, (CreateContainer, RemoveContainer))} if error is None else set()
        running = {c.revision for color, c in obs.containers.items() if c is not None and c.revision and color not in replaced}
        mem = mem.keep_failures({*p.revisions.values(), *running})
        self.store.save_memory(app.name, mem, last_deploy)
        return mem, last_deploy

    def _write_status(
        self,
        app: BlueGreenApp,
        obs: Observed,
        p: Plan,
        resolved: Resolved,
        hooks: Mapping[str, HookRecord],
        *,
        last_deploy: LastDeploy | None,
        rid: str,
        error: str | None = None,
        reason: str | None = None,
        progressing: bool = False,
    ) -> Status:
        conds = conditions(app, obs, p, error=error, error_reason=reason, progressing=progressing, secrets_stale=p.secrets_stale)
        src, conds = self._with_source(app.name, conds)
        status = build_status(
            app,
            obs,
            p,
            conditions=conds,
            previous=self.store.load_status(app.name),
            last_deploy=last_deploy,
            reconcile_id=rid,
            now=self.world.now(),
            secret_names=resolved.names,
            source=src,
        )
        self.store.save_status(app.name, replace(status, hooks=hook_status(hooks)))
        return status

    def _with_source(self, app: str, conds: list[Condition]) -> tuple[SourceStatus | None, list[Condition]]:
        """With --git-url: the source block of the status and its SourceUnavailable condition."""
        if self.source is None:
            return None, conds
        src, cond = self.source.status_for(app)
        return src, [*conds, cond]

    def _export(self, app: BlueGreenApp, obs: Observed, status: Status) -> None:
        self.metrics.set_live_color(app.name, obs.route.color if obs.route.reachable else None)
        live = self.store.load_releases(app.name).live
        self.metrics.set_release(app.name, (live.number, live.image, live.began, live.started_at) if live is not None else None)
        self.metrics.set_conditions(app.name, {c.type: c.status for c in status.conditions})


def hook_status(hooks: Mapping[str, HookRecord]) -> tuple[HookStatus, ...] | None:
    """status.json "hooks": each remembered hook run (phase, revision, state, exit code, last lines), newest first."""
    if not hooks:
        return None
    runs = sorted(hooks.values(), key=lambda h: h.started_at, reverse=True)
    return tuple(
        HookStatus(h.phase, h.revision, h.state, h.exit_code, iso(h.started_at), iso(h.finished_at) if h.finished_at is not None else None, h.output)
        for h in runs
    )
