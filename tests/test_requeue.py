"""The requeue contract (controller/app/requeue.py): when a reconcile wants to come back, for each kind of ending.

Three levels: `decide` on hand-made plans (pure), the Reconciler's `AppResult.requeue` on FakeWorld (the
plans and errors real passes end with), and the watch worker obeying it (in-process, no threads started).
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import time
from dataclasses import replace
from pathlib import Path

import pytest

import controller
from controller.app.plan import Plan
from controller.app.reconcile import Reconciler
from controller.app.requeue import MIN_AFTER, SOON, TEMPORARY_MAX, Requeue, decide
from controller.kernel.backoff import BackoffPolicy, backoff
from controller.kernel.errors import (
    ControllerError,
    DockerError,
    DockerUnavailable,
    HealthCheckFailed,
    Interrupted,
    InvalidInput,
    LockBusy,
    NginxError,
    PermanentError,
    RouteUnverified,
    TemporaryError,
)
from controller.runtime.watch import AppKind, Manager, Worker
from controller.spec.app import BlueGreenApp
from controller.store.metrics import Metrics
from controller.store.state import StateStore
from controller.world.actions import Blocker, WaitHealthy, WriteMarker
from controller.world.facts import Failure
from controller.world.fake import FakeWorld
from tests.factories import app_doc, make_app, write_spec
from tests.fakes import CheckedWorld, reconciler, world_for

NOW = 1_000_000.0


def a_plan(*blockers: str, waiting: bool = False) -> Plan:
    return Plan(
        app="dialogue",
        generation="g1",
        revisions={"blue": "r-blue", "green": "r-green"},
        serving="blue",
        target="blue",
        actions=(WaitHealthy("blue", "starting"),) if waiting else (),
        blockers=tuple(Blocker(r, f"{r} message") for r in blockers),
        diffs=(),
    )


def all_subclasses(cls: type[ControllerError]) -> set[type[ControllerError]]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | all_subclasses(sub)
    return out


def every_error_class() -> set[type[ControllerError]]:
    # Import every module of the package first, so an error class defined anywhere (drivers, ...) is seen.
    for mod in pkgutil.walk_packages(controller.__path__, "controller."):
        if not mod.name.endswith("__main__"):  # that one runs the command line
            importlib.import_module(mod.name)
    return all_subclasses(ControllerError)


def an_instance(cls: type[ControllerError]) -> ControllerError:
    """One instance of an error class, whatever its constructor's required arguments (all one-line strings)."""
    required = [
        p
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name != "self" and p.default is inspect.Parameter.empty and p.kind is p.POSITIONAL_OR_KEYWORD
    ]
    return cls(*("it failed" for _ in required))


# ------------------------------------------------------------------------------------ decide (pure)


def test_a_converged_pass_is_not_requeued_and_ends_a_failure_streak() -> None:
    assert decide(a_plan(), None, now=NOW, failures=4) == Requeue(None, "converged", 0)


def test_a_blocker_only_a_spec_edit_lifts_waits_for_a_change() -> None:
    r = decide(a_plan("LiveColorOutdated"), None, now=NOW, failures=3)
    assert r == Requeue(None, "LiveColorOutdated", 0)
    assert not r.backing_off


def test_backing_off_comes_back_exactly_at_the_remembered_retry_instant() -> None:
    assert decide(a_plan("BackingOff"), None, now=NOW, retry_at=NOW + 123.5) == Requeue(123.5, "BackingOff", 0)
    # The pass that failed the deploy ends with the error and a plan that already backs off: the instant wins.
    failed = HealthCheckFailed("green did not pass its health check")
    assert decide(a_plan("BackingOff"), failed, now=NOW, retry_at=NOW + 60) == Requeue(60.0, "BackingOff", 0)
    # An instant already past (wall clock against the worker's monotonic one) must not spin.
    assert decide(a_plan("BackingOff"), None, now=NOW, retry_at=NOW - 5).after == MIN_AFTER


def test_waits_and_interrupted_passes_come_back_soon_without_counting_a_failure() -> None:
    # Only waits left (a color still starting): soon, and a streak of failed passes before it ends.
    assert decide(a_plan(waiting=True), None, now=NOW, failures=2) == Requeue(SOON, "progressing", 0)
    # Interrupted (a stop between two steps): soon, counted as no failure, whatever the plan still holds:
    # waits, other actions (which would otherwise back off), a blocker, or no plan at all (stopped before one).
    stop = Interrupted("stop requested")
    undone = replace(a_plan(), actions=(WriteMarker("blue", "Nginx serves blue"),))
    for p in (a_plan(waiting=True), undone, a_plan("LiveUnhealthy"), a_plan("BackingOff"), None):
        for streak in (0, 3):
            got = decide(p, stop, now=NOW, retry_at=NOW + 500.0, failures=streak)
            assert got == Requeue(SOON, "Interrupted", 0) and not got.backing_off, (p, streak)


def test_actions_left_after_every_pass_back_off_instead_of_fighting_every_second() -> None:
    # Something keeps undoing the passes' work (another tool, a hand): do not redo it every second.
    undone = replace(a_plan(), actions=(WriteMarker("blue", "Nginx serves blue"),))
    assert decide(undone, None, now=NOW) == Requeue(1.0, "progressing", 1)
    assert decide(undone, None, now=NOW, failures=3) == Requeue(8.0, "progressing", 4)


@pytest.mark.parametrize(
    "error", [DockerUnavailable("down"), LockBusy("held by pid 1"), RouteUnverified("nginx answers blue"), KeyError("a bug")]
)
def test_temporary_errors_and_bugs_back_off_exponentially_up_to_a_cap(error: BaseException) -> None:
    failures, delays = 0, []
    for _ in range(9):
        r = decide(a_plan(), error, now=NOW, failures=failures)
        assert r.backing_off and r.reason == type(error).__name__
        failures = r.failures
        delays.append(r.after)
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert failures == 9
    assert TEMPORARY_MAX == 60


def test_permanent_errors_wait_for_a_change() -> None:
    permanent = {c for c in every_error_class() if issubclass(c, PermanentError)}
    assert {DockerError, NginxError, HealthCheckFailed, InvalidInput} <= permanent
    for cls in permanent:
        r = decide(a_plan(), an_instance(cls), now=NOW, failures=5)
        assert r == Requeue(None, cls.__name__, 0), cls
        # Also when the pass still had actions left: retrying unchanged input fails the same way.
        assert decide(a_plan(waiting=True), an_instance(cls), now=NOW).after is None, cls


@pytest.mark.parametrize("blocker", ["LiveUnhealthy", "RouteUnverified", "SomeFutureBlocker"])
def test_blockers_the_world_may_lift_back_off(blocker: str) -> None:
    first = decide(a_plan(blocker), None, now=NOW)
    assert (first.after, first.reason, first.failures) == (1.0, blocker, 1)
    assert decide(a_plan(blocker), None, now=NOW, failures=first.failures).after == 2.0
    # A permanent error whose pass ends on such a blocker (a failed wait on the live color) backs off too.
    assert decide(a_plan(blocker), HealthCheckFailed("live unhealthy"), now=NOW).after == 1.0
    # Mixed with a spec-only blocker: the one the world may lift still gets looked at again.
    assert decide(a_plan("LiveColorOutdated", blocker), None, now=NOW).after == 1.0


def test_every_error_class_is_on_one_side_of_the_split_and_exit_codes_follow_it() -> None:
    classes = every_error_class()
    assert Interrupted in classes
    for cls in classes - {TemporaryError, PermanentError}:
        assert issubclass(cls, TemporaryError) != issubclass(cls, PermanentError), cls
        assert cls.exit_code == (2 if issubclass(cls, InvalidInput) else 1), cls


# ------------------------------------------------------------------------------------ one backoff formula


def test_one_backoff_formula_for_the_failure_memory_and_temporary_errors() -> None:
    assert [backoff(n, 1.0, 60.0) for n in (0, 1, 2, 3, 4, 7, 8, 30)] == [1, 1, 2, 4, 8, 60, 60, 60]
    assert [backoff(n, 60.0, 3600.0) for n in (1, 2, 6, 7, 8)] == [60, 120, 1920, 3600, 3600]
    for count in (1, 2, 3, 9):
        f = Failure("r1", "green", count, NOW, "HealthCheckFailed", "boom")
        assert f.next_retry_at(BackoffPolicy(60.0, 3600.0)) == NOW + backoff(count, 60.0, 3600.0)
    # A count no float power holds (a hand-edited memory.json): the cap, not an OverflowError.
    assert backoff(5000, 60.0, 3600.0) == 3600.0
    assert Failure("r1", "green", 5000, NOW, "HealthCheckFailed", "boom").next_retry_at(BackoffPolicy(60.0, 3600.0)) == NOW + 3600.0


# ------------------------------------------------------------------------------------ AppResult.requeue on FakeWorld


def deployed(tmp_path: Path, **kw: float) -> tuple[BlueGreenApp, CheckedWorld, Reconciler]:
    v1 = make_app()
    w = world_for(v1)
    rec = reconciler(w, tmp_path / "state", **kw)
    first = rec.reconcile(v1)
    assert first.converged and first.requeue == Requeue(None, "converged", 0)
    return v1, w, rec


def test_reconcile_of_a_live_color_outdated_app_is_not_requeued(tmp_path: Path) -> None:
    _, _, rec = deployed(tmp_path)
    r = rec.reconcile(make_app(image="dialogue:2"))  # the live color's image changed: only a flip deploys it
    assert r.result == "blocked"
    assert r.requeue == Requeue(None, "LiveColorOutdated", 0)


def test_a_failed_deploy_is_requeued_at_its_remembered_retry_instant(tmp_path: Path) -> None:
    _, w, rec = deployed(tmp_path, base=30.0, cap=100.0)
    bad = make_app(image="dialogue:bad", activeColor="green")
    r = rec.reconcile(bad)
    assert r.result == "degraded" and r.error and "health" in r.error
    failure = next(iter(StateStore(tmp_path / "state").load_memory("dialogue").failures.values()))
    assert failure.count == 1 and failure.last_failed_at == w.now()
    assert r.requeue == Requeue(30.0, "BackingOff", 0)

    w.sleep(10)  # an event or a resync 10 s later: the same instant, 20 s from now
    r = rec.reconcile(bad)
    assert r.requeue == Requeue(20.0, "BackingOff", 0)
    assert not r.actions_done

    w.sleep(20)  # at the instant: retried, failed again, the next instant is twice as far
    r = rec.reconcile(bad)
    assert any(a.startswith("CreateContainer") for a in r.actions_done)
    assert r.requeue == Requeue(60.0, "BackingOff", 0)


def test_temporary_errors_back_off_per_app_and_a_converged_pass_resets(tmp_path: Path) -> None:
    v1, w, rec = deployed(tmp_path)
    w.docker_up = False
    seen = [rec.reconcile(v1).requeue for _ in range(4)]
    assert [(r.after, r.failures, r.reason) for r in seen] == [(1, 1, "DockerUnavailable"), (2, 2, "DockerUnavailable"), (4, 3, "DockerUnavailable"), (8, 4, "DockerUnavailable")]
    other = make_app("other", ports={"blue": 19001, "green": 19002})
    assert rec.reconcile(other).requeue.failures == 1  # counted per app
    w.docker_up = True
    assert rec.reconcile(v1).requeue == Requeue(None, "converged", 0)
    w.docker_up = False
    assert rec.reconcile(v1).requeue.after == 1  # a new streak


def test_a_permanent_error_waits_for_a_change(tmp_path: Path) -> None:
    app = make_app()
    w = world_for(app)
    w.nginx_test_fails = True  # `nginx -t` rejects the host's config: retrying the same switch fails the same way
    r = reconciler(w, tmp_path / "state").reconcile(app)
    assert r.result == "error" and r.error and "configuration file test failed" in r.error
    assert r.requeue == Requeue(None, "NginxError", 0)


def test_a_live_color_that_stays_unhealthy_and_an_unverifiable_route_back_off(tmp_path: Path) -> None:
    v1, w, rec = deployed(tmp_path)
    w.containers["dialogue-blue"].broken = True
    w.sleep(11)  # past its health timeout (10 s): LiveUnhealthy, never recreated, may recover by itself
    r = rec.reconcile(v1)
    assert r.plan is not None and [b.reason for b in r.plan.blockers] == ["LiveUnhealthy"]
    assert (r.requeue.after, r.requeue.failures) == (1.0, 1)
    w.containers["dialogue-blue"].broken = False
    w.nginx_up = False
    r = rec.reconcile(v1)
    assert r.plan is not None and [b.reason for b in r.plan.blockers] == ["RouteUnverified"]
    assert r.requeue == Requeue(2.0, "RouteUnverified", 2)  # the streak goes on: the world is still not fixed


def test_an_interrupted_pass_comes_back_soon(tmp_path: Path) -> None:
    w = world_for(make_app())
    # SIGTERM right after the first step (the container's creation): the executor stops before the next one.
    rec = Reconciler(w, StateStore(tmp_path / "state"), Metrics(), should_stop=lambda: bool(w.mutations))
    r = rec.reconcile(make_app())
    assert r.result == "progressing" and r.error and "stop" in r.error.lower()
    assert r.requeue == Requeue(SOON, "Interrupted", 0)


def test_a_huge_failure_count_in_memory_backs_off_to_the_cap_instead_of_crashing(tmp_path: Path) -> None:
    _, _, rec = deployed(tmp_path, base=30.0, cap=100.0)
    bad = make_app(image="dialogue:bad", activeColor="green")
    rec.reconcile(bad)
    path = tmp_path / "state" / "apps" / "dialogue" / "memory.json"
    raw = json.loads(path.read_text())
    for f in raw["failures"].values():
        f["count"] = 5000  # a hand edit, or years of failures
    path.write_text(json.dumps(raw))
    r = rec.reconcile(bad)
    assert r.requeue == Requeue(100.0, "BackingOff", 0)


# ------------------------------------------------------------------------------------ the watch worker obeys it


def worker_for(tmp_path: Path, world: FakeWorld, doc: dict[str, object], base: float = 60.0) -> Worker:
    specs = tmp_path / "specs"
    specs.mkdir(exist_ok=True)
    write_spec(specs / "dialogue.yaml", doc)
    metrics = Metrics()
    store = StateStore(tmp_path / "state")
    watcher = Manager(specs, [AppKind(Reconciler(world, store, metrics, backoff_base=base))], metrics, tmp_path / "state")
    assert watcher.reload("start") == ["dialogue"]  # workers made, threads not started: passes run here
    return watcher.workers["dialogue"]


def run_pass(worker: Worker) -> float | None:
    """One pass as the worker thread runs it; returns how far ahead (s) it scheduled the next one, None: not at all."""
    worker._pass(worker.obj, {"test"}, None)
    due = worker.due
    return None if due is None else due - time.monotonic()


def test_watch_schedules_nothing_for_a_blocked_app_and_the_retry_instant_for_a_backing_off_one(tmp_path: Path) -> None:
    world = world_for(make_app())
    worker = worker_for(tmp_path, world, app_doc())
    assert run_pass(worker) is None  # converged
    worker.obj = make_app(image="dialogue:2")
    assert run_pass(worker) is None  # LiveColorOutdated: the old policy retried it after 1 s, 2 s, 4 s, ...
    assert worker.last_requeue == Requeue(None, "LiveColorOutdated", 0)

    worker.obj = make_app(image="dialogue:bad", activeColor="green")
    ahead = run_pass(worker)  # the failed deploy: next pass at the memory's instant, 60 s, not jittered
    assert ahead is not None and 59.5 < ahead <= 60.0


def test_watch_jitters_only_the_backoff_of_temporary_errors(tmp_path: Path) -> None:
    world = world_for(make_app())
    worker = worker_for(tmp_path, world, app_doc())
    world.docker_up = False
    first = run_pass(worker)
    assert first is not None and 0.85 < first <= 1.1
    second = run_pass(worker)  # a retry trigger never postpones: the pass due in ~1 s stays
    assert second is not None and second <= first
    worker._due = None  # as the worker thread does when it takes the pass
    second = run_pass(worker)
    assert second is not None and 3.5 < second <= 4.4  # third consecutive failure: 4 s ±10 %
    assert worker.last_requeue is not None and worker.last_requeue.failures == 3


def test_a_resync_pulls_in_a_far_retry_and_never_postpones_a_near_pass(tmp_path: Path) -> None:
    worker = worker_for(tmp_path, world_for(make_app()), app_doc())
    worker.trigger("retry", 3000.0, urgent=False)
    assert worker.due is not None and worker.due - time.monotonic() > 2900
    worker.trigger("resync", 0.0, urgent=False)  # a long retry instant must not swallow the resync
    assert worker.due is not None and worker.due - time.monotonic() <= 0
    worker.trigger("retry", 30.0, urgent=False)
    assert worker.due is not None and worker.due - time.monotonic() <= 0

