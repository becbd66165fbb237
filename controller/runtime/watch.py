"""Watch mode: `reconcile --watch -f PATH`, the controller as a long-running service.

One manager, in the shape of controller-runtime's Manager: each kind of object registers a small reconciler
(`Kind`: apps here with `AppKind`, accessories in controller/runtime/accessory_kind.py), and the manager owns what
they share: the spec reads, ONE Docker event stream, the spec-file watch or the git source, the resync clock,
the pass lock, and one worker per object (app or accessory) that obeys the `Requeue` its pass returns.

What asks for a pass (a "trigger"), and how:

    start    every object once (the apps share one Docker list call)
    spec     watchfiles on the spec's directory (an editor's write-temp-then-rename is a change of the
             spec's name there); the files are re-read and only the objects whose spec changed are triggered
    docker   one stream of the daemon's container events, routed by label: an app's (`bluegreen.app`: die,
             stop, destroy, health_status) and an accessory's (`bluegreen.accessory`: also start, kill, oom)
    accessory
             an accessory's readiness changed: every app whose dependsOn names it (a new color held by
             dependsOn starts as soon as it may)
    resync   every --resync seconds (±10 % jitter): specs re-read, every object (one Docker list call shared
             by every app)
    git      with --git-url instead of the spec watch: a fetch every --git-interval (±10 %; backoff while it
             fails) and on SIGHUP; a new commit put in force re-reads the specs like a spec save
             (controller/runtime/source.py)
    retry    when the pass asked to come back (its `Requeue`, controller/app/requeue.py). An app: a temporary
             error or a blocker the world may lift (Docker unreachable, lock busy, Nginx's route unverified,
             ...) after 1 s, doubling, capped at 60 s, jittered; a failed revision backing off at exactly its
             remembered retry instant; a wait or a pass cut short after SOON. Nothing is requeued after a
             converged pass, a permanent error or a blocker only a spec edit lifts (LiveColorOutdated): the
             triggers above (and the resync, the safety net) come next. An accessory: every RETRY seconds
             while not converged (controller/runtime/accessory_kind.py)

Each object has one worker thread with one pending slot: triggers arriving while a pass is due or running
collapse into one further pass (bursts are debounced by DEBOUNCE seconds), and a health wait of one app
never holds up another. An app's worker runs `Reconciler.reconcile(app)`: the same level-triggered loop as
--once; an accessory's runs `AccessoryRunner.reconcile`, one accessory pass at a time (as --once runs them).
A resync or retry never postpones a pass already due sooner, and pulls in one due later.

An invalid spec file is logged once as an error event `spec.invalid` (file and problem) and counted as a
pass with result `invalid`; the last valid spec of that file stays in force until a valid one arrives.

Lock: the state dir's flock is shared by the workers of this process and held while at least one of them
is in a pass; an idle watch process holds nothing, so `reconcile --once` from cron or a shell interleaves
with it (it waits --lock-timeout for passes in progress). A worker that cannot get the lock retries later.

SIGHUP (`systemctl reload`): re-read the specs and resync every object now.

SIGTERM/SIGINT: a stop flag the executor checks between steps and inside health waits; a switch already
made still gets its marker. Workers finish, the lock is released, exit 0. A second signal exits at once
(exit 1): kill -9 safety still holds, the next run completes what was left.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from controller.app.observe import index_containers
from controller.app.reconcile import Reconciler
from controller.app.requeue import Requeue
from controller.kernel.backoff import backoff
from controller.kernel.errors import EXIT_FAIL, EXIT_OK, ControllerError, LockBusy, SpecError
from controller.kernel.logs import get_logger
from controller.runtime.build import Runtime
from controller.runtime.options import Options, err
from controller.runtime.source import GitSource
from controller.spec.directory import Selection, select
from controller.store.metrics import Metrics, WatchMetrics
from controller.store.state import Lock
from controller.world.facts import LABEL_APP, ContainerFact

DEBOUNCE = 0.5  # seconds a trigger waits for more of its burst
JITTER = 0.1  # resync period ±10 %
EVENTS_RETRY_MAX = 30.0  # reconnect delay cap of the spec-file watch and the Docker events stream
SNAPSHOT_MAX_AGE = 2.0  # a shared container list older than this is not used: the worker lists itself
APP_EVENTS = frozenset({"die", "stop", "destroy", "health_status"})


def jittered(seconds: float, rng: random.Random, spread: float = JITTER) -> float:
    return seconds * (1 + rng.uniform(-spread, spread))


def reconnect_delay(attempt: int) -> float:
    """Before the `attempt`-th reconnect (1-based) of the file watch or the events stream: 1 s, doubling, ≤ 30 s."""
    return backoff(attempt, 1.0, EVENTS_RETRY_MAX)


class PassLock:
    """The state dir's flock, held while any worker of this process is in a pass.

    flock belongs to an open file, not a thread: the workers share one holding, counted here.
    """

    def __init__(self, state_dir: Path, timeout: float, stop: threading.Event) -> None:
        self.state_dir = state_dir
        self.timeout = timeout
        self.stop = stop
        self._mutex = threading.Lock()
        self._count = 0
        self._lock: Lock | None = None

    @contextmanager
    def held(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()

    def acquire(self) -> None:
        with self._mutex:
            if self._count == 0:
                self._lock = self._take()
            self._count += 1

    def release(self) -> None:
        with self._mutex:
            self._count -= 1
            if self._count == 0 and self._lock is not None:
                self._lock.__exit__(None, None, None)
                self._lock = None

    @property
    def holding(self) -> bool:
        return self._lock is not None

    def _take(self) -> Lock:
        deadline = time.monotonic() + self.timeout
        while True:
            lock = Lock(self.state_dir, 0)
            try:
                lock.__enter__()
                return lock
            except LockBusy as e:
                if self.stop.is_set() or time.monotonic() >= deadline:
                    raise LockBusy(e.path, e.holder_pid, self.timeout) from None
            self.stop.wait(0.1)


@dataclass
class Snapshot:
    """One Docker list call, shared by the app workers a resync triggers."""

    taken: float  # monotonic
    containers: dict[str, ContainerFact]


@dataclass(frozen=True)
class Outcome:
    """What one pass of one object ended with, as the manager needs it."""

    result: str  # converged | progressing | blocked | degraded | error
    requeue: Requeue  # when to come back (controller/app/requeue.py)
    error: str | None = None
    ready: bool | None = None  # the object's readiness, for the objects that depend on it; None: nobody does
    detail: Any = None  # the kind's own result (AppResult, AccessoryResult)


class Kind(Protocol):
    """One kind of object under the manager: controller-runtime's reconciler registered with its Manager."""

    name: str  # "app", "accessory": the log field that names an object of this kind
    label: str  # the Docker label that names the object on its containers
    events: frozenset[str]  # Docker actions on those containers that ask for a pass

    def objects(self, sel: Selection) -> dict[Path, Any]:
        """The objects of this kind in force after a spec read, by file (each has `.name` and `.generation()`)."""
        ...

    def depends_on(self, obj: Any) -> Collection[str]:
        """Names of the objects (of any kind) whose readiness `obj` waits for."""
        ...

    def snapshot(self) -> Snapshot | None:
        """One container list the workers a burst of triggers starts may share; None: each observes itself."""
        ...

    def reconcile(self, obj: Any, containers: dict[str, ContainerFact] | None, should_stop: Callable[[], bool]) -> Outcome: ...

    def failed(self, name: str, error: Exception) -> Requeue:
        """The pass did not run (a ControllerError: the lock) or crashed (anything else): when to try again."""
        ...


class AppKind:
    """Apps: `Reconciler.reconcile`, requeued as its `AppResult.requeue` says."""

    name = "app"
    label = LABEL_APP
    events = APP_EVENTS

    def __init__(self, reconciler: Reconciler) -> None:
        self.reconciler = reconciler

    def objects(self, sel: Selection) -> dict[Path, Any]:
        return dict(sel.apps_by_file)

    def depends_on(self, obj: Any) -> Collection[str]:
        return tuple(obj.spec.dependsOn or ())

    def snapshot(self) -> Snapshot | None:
        try:
            return Snapshot(time.monotonic(), index_containers(self.reconciler.world))
        except ControllerError as e:
            get_logger().warning("watch.list_failed", error=str(e))
            return None

    def reconcile(self, obj: Any, containers: dict[str, ContainerFact] | None, should_stop: Callable[[], bool]) -> Outcome:
        r = self.reconciler.reconcile(obj, containers, should_stop=should_stop)
        return Outcome(r.result, r.requeue, r.error, detail=r)

    def failed(self, name: str, error: Exception) -> Requeue:
        if not isinstance(error, ControllerError):
            self.reconciler.metrics.unreachable(name)  # a crashed pass still counts as a (failed) run
        return self.reconciler.requeue(name, None, error)


class Worker:
    """One thread per object: waits for a due pass, runs it, schedules the next one as the pass asks (its Requeue)."""

    def __init__(self, manager: Manager, kind: Kind, obj: Any) -> None:
        self.manager = manager
        self.kind = kind
        self.obj = obj
        self.name: str = obj.name
        self._cond = threading.Condition()
        self._due: float | None = None  # monotonic time of the pending pass; None: nothing pending
        self._sources: set[str] = set()
        self._snapshot: Snapshot | None = None
        self._retired = False
        self._superseded = False  # the spec changed while a pass of the old one runs
        self._running: Any = None
        self.passes = 0
        self.ready: bool | None = None  # as the last pass observed it (kinds others depend on)
        self.last_result: Any = None
        self.last_requeue: Requeue | None = None
        self.thread = threading.Thread(target=self._loop, name=f"{kind.name}-{self.name}", daemon=True)

    def _should_stop(self) -> bool:
        return self.manager.stop_event.is_set() or self._superseded or self._retired

    # Called from other threads --------------------------------------------------------------
    def trigger(self, source: str, delay: float, snapshot: Snapshot | None = None, urgent: bool = True) -> None:
        """Ask for a pass in `delay` seconds. Not `urgent` (resync, retry): leaves a pass due as soon alone."""
        with self._cond:
            now = time.monotonic()
            due = now + delay
            if self._due is not None and not urgent and self._due <= due:
                return
            self._due = due if self._due is None else min(self._due, due)
            self._sources.add(source)
            # Only a resync snapshot taken for this very pass is worth using; anything newer makes it stale.
            self._snapshot = snapshot
            self._cond.notify_all()
        self.manager.watch_metrics.triggers.labels(source=source).inc()

    def set_obj(self, obj: Any) -> None:
        with self._cond:
            self.obj = obj
            if self._running is not None and self._running != obj:
                self._superseded = True  # a health wait for the old spec ends at its next probe
        self.trigger("spec", self.manager.debounce)

    def retire(self) -> None:
        with self._cond:
            self._retired = True
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    @property
    def pending(self) -> bool:
        return self._due is not None

    @property
    def due(self) -> float | None:
        """Monotonic time of the pending pass; None: nothing pending."""
        return self._due

    # The worker thread ----------------------------------------------------------------------
    def _loop(self) -> None:
        stop = self.manager.stop_event
        while True:
            with self._cond:
                while True:
                    if stop.is_set() or self._retired:
                        return
                    now = time.monotonic()
                    if self._due is not None and self._due <= now:
                        break
                    self._cond.wait(None if self._due is None else self._due - now)
                obj, sources, snap = self.obj, self._sources, self._snapshot
                self._due, self._sources, self._snapshot = None, set(), None
                self._running, self._superseded = obj, False
            try:
                self._pass(obj, sources, snap)
            finally:
                with self._cond:
                    self._running = None

    def _pass(self, obj: Any, sources: set[str], snap: Snapshot | None) -> None:
        log = get_logger(**{self.kind.name: self.name})
        containers = snap.containers if snap is not None and time.monotonic() - snap.taken <= SNAPSHOT_MAX_AGE else None
        log.debug("watch.pass", triggers=sorted(sources), shared_list=containers is not None)
        outcome: Outcome | None = None
        problem: str | None = None
        try:
            with self.manager.lock.held():
                outcome = self.kind.reconcile(obj, containers, self._should_stop)
            requeue = outcome.requeue
        except ControllerError as e:  # the lock: the pass did not run
            problem = str(e)
            requeue = self.kind.failed(self.name, e)
        except Exception as e:  # a bug must not kill the worker: log it, count it, retry later
            log.exception("watch.pass_crashed", error=f"{type(e).__name__}: {e}")
            problem = f"{type(e).__name__}: {e}"
            requeue = self.kind.failed(self.name, e)
        self.passes += 1
        self.last_result = outcome.detail if outcome is not None else None
        self.last_requeue = requeue
        if self.manager.stop_event.is_set():
            return
        if outcome is not None and outcome.ready is not None and outcome.ready != self.ready:
            self.ready = outcome.ready
            self.manager.trigger_dependents(self.name)
        if outcome is not None and outcome.result == "progressing" and self._superseded:
            return  # cut short for a newer spec, whose pass is already pending
        result = outcome.result if outcome is not None else "not run"
        error = outcome.error if outcome is not None else problem
        if requeue.after is None:
            # Converged, or nothing but a change helps: the spec watch, Docker events and the resync trigger it.
            if result != "converged":
                log.info("watch.idle", result=result, reason=requeue.reason, error=error)
            return
        # Only the exponential backoff is jittered (apps failing together must not retry in step); a
        # failed revision's retry instant is the memory's, shared with cron, and is kept exactly.
        delay = jittered(requeue.after, self.manager.rng) if requeue.backing_off else requeue.after
        (log.warning if requeue.backing_off else log.info)(
            "watch.retry", seconds=round(delay, 2), failures=requeue.failures, reason=requeue.reason, result=result, error=error
        )
        self.trigger("retry", delay, urgent=False)


class EventSource(Protocol):
    def events(self, filters: dict[str, Any]) -> Any: ...

    def reset(self) -> None: ...


class Manager:
    """Spec files, one Docker event stream and the resync clock → one worker per object of every kind.

    `start()` starts the workers and the trigger threads; `serve_forever()` runs the resync clock on the
    calling thread until told to stop; `request_stop()` and `wait_stopped()` end it (see `run_watch`).
    """

    def __init__(
        self,
        path: Path,
        kinds: Sequence[Kind],
        metrics: Metrics,
        state_dir: Path,
        *,
        lock_timeout: float = 30.0,
        resync: float = 60.0,
        debounce: float = DEBOUNCE,
        docker: EventSource | None = None,
        rng: random.Random | None = None,
        source: GitSource | None = None,
    ) -> None:
        self.path = path.absolute()
        self.kinds = list(kinds)
        self.source = source  # --git-url: specs read at the commit in force, fetched by the `git` thread
        self.metrics = metrics
        self.watch_metrics = WatchMetrics(metrics.registry)
        self.resync = resync
        self.debounce = debounce
        self.docker = docker
        self.rng = rng or random.Random()
        self.stop_event = threading.Event()
        self.lock = PassLock(state_dir, lock_timeout, self.stop_event)
        self.log = get_logger()
        self.apps_by_file: dict[Path, Any] = {}  # in force: handed back to the next read (the last valid spec of a file)
        self.errors_by_file: dict[Path, str] = {}
        self.workers: dict[str, Worker] = {}  # by object name: names are unique across kinds (controller/spec/directory.py)
        self._specs_lock = threading.Lock()
        self._started = False
        self._events_stream: Any = None
        self._threads: list[threading.Thread] = []

    # Specs ------------------------------------------------------------------------------------
    def reload(self, source: str) -> list[str]:
        """Re-read the spec files; returns the names of the objects triggered (new or changed)."""
        with self._specs_lock:
            return self._reload(source)

    def _reload(self, source: str) -> list[str]:
        try:
            pick = self.source.select if self.source is not None else select
            sel = pick(self.path, self.apps_by_file, state_dir=self.lock.state_dir)  # the same policy as --once, with the last valid specs in force
        except SpecError as e:
            self._invalid(self.path, str(e), None, None)
            return []  # the path itself is gone: every last valid spec stays in force
        self._valid(self.path)
        for p in sel.problems:
            kept = self.apps_by_file.get(p.file)
            self._invalid(p.file, p.message, kept if kept is not None and sel.apps_by_file.get(p.file) == kept else None, p.app)
        troubled = {p.file for p in sel.problems}
        for f in list(self.errors_by_file):
            if f != self.path and f not in troubled:
                self._valid(f)  # fixed, or the invalid file was removed
        self.apps_by_file = sel.apps_by_file
        self.watch_metrics.spec_errors.set(len(self.errors_by_file))
        new = {obj.name: (kind, f, obj) for kind in self.kinds for f, obj in kind.objects(sel).items()}
        triggered = []
        for name in sorted(set(self.workers) - set(new)):
            gone = self.workers.pop(name)
            self.log.warning("spec.removed", **{gone.kind.name: name}, detail="no longer reconciled; its containers are left as they are")
            gone.retire()
        for name, (kind, f, obj) in sorted(new.items(), key=lambda item: item[0]):
            current = self.workers.get(name)
            if current is not None and current.kind is kind and current.obj == obj:
                continue
            if current is not None and current.kind is not kind:  # the name moved to the other kind
                current.retire()
                current = None
            worker = current or Worker(self, kind, obj)
            if current is None:
                self.workers[name] = worker
                if self._started:
                    worker.thread.start()
            if source != "start":
                self.log.info("spec.changed", **{kind.name: name}, generation=obj.generation(), file=str(f))
                worker.set_obj(obj)
            triggered.append(name)
        return triggered

    def _invalid(self, f: Path, message: str, kept: Any, app: str | None) -> None:
        if self.errors_by_file.get(f) == message:
            return  # reported already: one event per invalid edit, not one per re-read
        self.errors_by_file[f] = message
        if kept is not None:
            app = kept.name
        self.log.error(
            "spec.invalid",
            file=str(f),
            error=message,
            app=app,
            in_force=kept.generation() if kept is not None else None,
            detail="the last valid spec stays in force" if kept is not None else "not reconciled until valid",
        )
        if app is not None:
            self.metrics.invalid_spec(app)
        self.watch_metrics.spec_errors.set(len(self.errors_by_file))

    def _valid(self, f: Path) -> None:
        if self.errors_by_file.pop(f, None) is not None:
            self.log.info("spec.valid", file=str(f))

    # Triggers ---------------------------------------------------------------------------------
    def trigger_all(self, source: str, delay: float, urgent: bool) -> None:
        workers = list(self.workers.values())
        for kind in self.kinds:
            mine = [w for w in workers if w.kind is kind]
            snap = kind.snapshot() if mine else None
            for worker in mine:
                worker.trigger(source, delay, snap, urgent=urgent)

    def trigger_dependents(self, name: str) -> None:
        """`name`'s readiness changed: a pass for every object that depends on it (dependsOn)."""
        for worker in list(self.workers.values()):
            if name in worker.kind.depends_on(worker.obj):
                worker.trigger("accessory", self.debounce, urgent=False)

    def do_resync(self) -> None:
        self.reload("resync")  # the safety net for lost file events too
        self.trigger_all("resync", 0.0, urgent=False)

    def _watch_files(self) -> None:
        import watchfiles

        target = self.path
        attempt = 1
        while not self.stop_event.is_set():
            is_dir = target.is_dir()
            directory = target if is_dir else target.parent

            def relevant(_change: Any, p: str, is_dir: bool = is_dir) -> bool:
                q = Path(p)
                if is_dir:
                    return q.parent == target and q.suffix in (".yaml", ".yml") and not q.name.startswith(".")
                return q == target  # a rename over the spec is an event for its name in the directory

            try:
                for _changes in watchfiles.watch(
                    directory,
                    watch_filter=relevant,
                    debounce=int(self.debounce * 1000) or 1,
                    step=50,
                    stop_event=self.stop_event,
                    recursive=False,
                    rust_timeout=1000,
                    raise_interrupt=False,
                ):
                    attempt = 1
                    self.reload("spec")
                return
            except Exception as e:  # the directory vanished, inotify limits, ...: resync still covers
                self.log.error("watch.files_failed", path=str(directory), error=f"{type(e).__name__}: {e}", retry_in=reconnect_delay(attempt))
                if self.stop_event.wait(reconnect_delay(attempt)):
                    return
                attempt += 1

    def event_filters(self) -> dict[str, Any]:
        """One stream for every kind: container events of the kinds' actions, routed by label in `_on_event`
        (Docker ANDs label filters, so the labels cannot be filtered for on the daemon's side)."""
        return {"type": ["container"], "event": sorted({e for k in self.kinds for e in k.events})}

    def _watch_docker(self) -> None:
        assert self.docker is not None
        filters = self.event_filters()
        attempt = 1
        missed = False  # events may have been missed (a lost stream, a daemon restart)
        while not self.stop_event.is_set():
            try:
                stream = self.docker.events(filters)
            except Exception as e:
                missed = True
                self.watch_metrics.docker_events_connected.set(0)
                self.log.warning("docker.events_unavailable", error=str(e), retry_in=reconnect_delay(attempt))
                if self.stop_event.wait(jittered(reconnect_delay(attempt), self.rng)):
                    return
                attempt += 1
                continue
            self._events_stream = stream
            if self.stop_event.is_set():
                stream.close()
                return
            self.watch_metrics.docker_events_connected.set(1)
            self.log.info("docker.events_connected", reconnect=missed)
            if missed:
                # Events were missed while disconnected, and the daemon may have restarted: look at everything.
                self.docker.reset()
                self.trigger_all("docker", self.debounce, urgent=True)
            missed = True
            try:
                for event in stream:
                    attempt = 1
                    self._on_event(event)
                error = "stream ended"
            except Exception as e:
                error = f"{type(e).__name__}: {e}"
            finally:
                stream.close()
                self._events_stream = None
                self.watch_metrics.docker_events_connected.set(0)
            if self.stop_event.is_set():
                return
            self.log.warning("docker.events_lost", error=error, retry_in=reconnect_delay(attempt))
            if self.stop_event.wait(jittered(reconnect_delay(attempt), self.rng)):
                return
            attempt += 1

    def _watch_git(self) -> None:
        assert self.source is not None

        def changed() -> None:
            self.reload("spec")  # the objects whose spec differs at the new commit, like a spec save
            self.trigger_all("resync", 0.0, urgent=False)  # and a pass for every object: status shows the source's condition

        self.source.poll_loop(self.stop_event, changed, self.rng)

    def _on_event(self, event: dict[str, Any]) -> None:
        attrs = (event.get("Actor") or {}).get("Attributes") or {}
        action = str(event.get("Action") or event.get("status") or "")
        for kind in self.kinds:
            name = attrs.get(kind.label)
            worker = self.workers.get(name) if isinstance(name, str) else None
            if worker is None or worker.kind is not kind or action.split(":")[0] not in kind.events:
                continue  # "health_status: healthy" is the action of a health_status event
            self.log.debug("docker.event", **{kind.name: name}, action=action, container=attrs.get("name"))
            worker.trigger("docker", self.debounce)

    # Lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        """Load the specs, start the workers (each reconciles once) and the trigger threads."""
        self.reload("start")
        self._started = True
        for worker in self.workers.values():
            worker.thread.start()
        self.trigger_all("start", 0.0, urgent=True)
        for target, name in ((self._watch_files, "watch-files"), (self._watch_docker, "watch-docker"), (self._watch_git, "watch-git")):
            if name == "watch-docker" and self.docker is None:
                continue
            if (name == "watch-files" and self.source is not None) or (name == "watch-git" and self.source is None):
                continue  # a git source replaces the spec-file watch
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def request_stop(self) -> None:
        self.stop_event.set()
        stream = self._events_stream
        if stream is not None:
            stream.close()
        for worker in list(self.workers.values()):
            worker.wake()

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Join the workers (each ends its pass at the next step boundary), then briefly the trigger threads."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for w in list(self.workers.values()):
            if w.thread.is_alive():
                w.thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        for t in self._threads:
            t.join(2.0)  # daemon threads: one stuck connecting to a dead daemon must not hold the exit
        return not any(w.thread.is_alive() for w in self.workers.values())

    def serve_forever(self, stopping: Callable[[], bool], resync_now: Callable[[], bool] = lambda: False) -> None:
        """Resync clock on the calling (main) thread until `stopping()`; polls so a signal is seen quickly."""
        next_resync = time.monotonic() + jittered(self.resync, self.rng)
        while not stopping() and not self.stop_event.is_set():
            now = time.monotonic()
            if now >= next_resync or resync_now():
                self.do_resync()
                next_resync = time.monotonic() + jittered(self.resync, self.rng)
                continue
            time.sleep(min(0.2, next_resync - now))


def run_watch(rt: Runtime, kinds: Sequence[Kind], path: Path, opts: Options) -> int:
    """The service: `reconcile --watch`, on the parts the command line built (controller/runtime/build.py)."""
    log = get_logger()
    run = opts.run
    manager = Manager(
        path,
        kinds,
        rt.metrics,
        run.state_dir,
        lock_timeout=run.lock_timeout,
        resync=opts.resync,
        docker=rt.docker,
        source=rt.source,
    )
    server = None
    if opts.metrics_port:
        try:
            server = rt.metrics.serve(opts.metrics_port, opts.metrics_addr)
        except OSError as e:
            err(f"cannot serve metrics on {opts.metrics_addr}:{opts.metrics_port}: {e.strerror or e}")
            return EXIT_FAIL

    signals: list[int] = []
    hups: list[int] = []

    def on_hup(signum: int, _frame: FrameType | None) -> None:
        hups.append(signum)  # `systemctl reload`: re-read the specs and resync every object now

    def take_hup() -> bool:
        if not hups:
            return False
        hups.clear()
        log.info("watch.sighup", detail="re-reading specs and resyncing every object")
        if manager.source is not None:
            manager.source.poke()  # and fetching the git source now
        return True

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if signals:
            # Second signal: leave now. A kill at any instant is safe; the next run completes the work.
            os.write(2, b'{"event": "watch.stop_forced", "level": "warning"}\n')
            os._exit(EXIT_FAIL)
        signals.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hup)
    log.info(
        "watch.start",
        path=str(manager.path),
        state_dir=str(run.state_dir),
        resync=opts.resync,
        kinds=[k.name for k in manager.kinds],
        metrics=f"{opts.metrics_addr}:{opts.metrics_port}" if opts.metrics_port else None,
        pid=os.getpid(),
    )
    try:
        manager.start()
        manager.serve_forever(lambda: bool(signals), take_hup)
        signame = signal.Signals(signals[0]).name if signals else None
        busy = [w.name for w in manager.workers.values() if w._running is not None]
        log.info("watch.stopping", signal=signame, busy=busy)
        manager.request_stop()
        manager.wait_stopped()
    finally:
        manager.request_stop()
        if server is not None:
            server.shutdown()
            server.server_close()
        for s, h in previous.items():
            signal.signal(s, h)
    log.info("watch.stopped", lock_held=manager.lock.holding)
    sys.stderr.flush()
    return EXIT_OK
