"""status.json and memory.json read back: typed, and a type-corrupt file is absent, not an internal error.

Issue 10 item 7: a hand-edited, torn or foreign state file must not stop the app, nor every app of the run.
Real files in a temp state dir, read through StateStore and the Reconciler (FakeWorld), and through the
real command line against a real dockerd and nginx.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from controller.app.reconcile import Reconciler
from controller.app.status import render_text
from controller.kernel import logs
from controller.kernel.document import Corrupt
from controller.kernel.logs import register_secret
from controller.spec.app import BlueGreenApp
from controller.store.documents import STATUS, LastDeploy
from controller.store.state import StateStore
from controller.world.facts import Failure, Memory
from controller.world.fake import FakeWorld
from tests.factories import make_app
from tests.fakes import reconciler, world_for
from tests.support.controller_run import World
from tests.support.nginx import NginxInstance

SENTINEL = "s3cr3t-content-never-echoed"  # file contents must not reach logs or output

FAILURE: dict[str, Any] = {
    "revision": "r1", "color": "green", "count": 1, "last_failed_at": 1000.0, "reason": "HealthCheckFailed", "message": "m",
}

# Each: memory.json text that the controller did not write (or no longer can use).
CORRUPT_MEMORY: dict[str, str] = {
    "list at top level": json.dumps([SENTINEL]),
    "string at top level": json.dumps(SENTINEL),
    "not JSON": "{" + SENTINEL,
    "failures is a list": json.dumps({"failures": [SENTINEL]}),
    "failures is a number": json.dumps({"failures": 5}),
    "failure count is text": json.dumps({"failures": {"x": {**FAILURE, "count": "a"}}}),
    "failure without fields": json.dumps({"failures": {"x": {"count": 1}}}),
    "failure count huge": json.dumps({"failures": {"r1": {**FAILURE, "count": 10**30}}}),
    "failure count is a bool": json.dumps({"failures": {"r1": {**FAILURE, "count": True}}}),
    "failedAt infinite": json.dumps({"failures": {"r1": FAILURE}}).replace("1000.0", "1e999"),
    "failure color unknown": json.dumps({"failures": {"r1": {**FAILURE, "color": SENTINEL}}}),
    "convergedGeneration is a number": json.dumps({"convergedGeneration": 5}),
    "lastDeploy is a number": json.dumps({"lastDeploy": 5}),
    "lastDeploy without fields": json.dumps({"lastDeploy": {"at": SENTINEL}}),
    "integer of 5000 digits": '{"convergedGeneration": ' + "9" * 5000 + "}",
    "nested 100000 deep": '{"failures": ' + "[" * 100_000 + "]" * 100_000 + "}",
}

CORRUPT_STATUS: dict[str, str] = {
    "conditions is a number": json.dumps({"conditions": 5}),
    "conditions hold a string": json.dumps({"conditions": [SENTINEL]}),
    "condition type is a list": json.dumps({"conditions": [{"type": [1], "status": "True"}]}),
    "list at top level": json.dumps([{"conditions": []}]),
    "not JSON": SENTINEL + "}",
    "generation is a huge number": '{"generation": 1e999, "conditions": []}',
}


def _warnings(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == "state.corrupt"]


def _write(store: StateStore, app: str, name: str, text: str) -> Path:
    path = store.app_dir(app) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", sorted(CORRUPT_MEMORY))
def test_corrupt_memory_is_absent_and_logged_once(tmp_path: Path, case: str) -> None:
    store = StateStore(tmp_path)
    path = _write(store, "dialogue", "memory.json", CORRUPT_MEMORY[case])
    with capture_logs() as logs:
        for _ in range(3):
            mem = store.load_memory("dialogue")
            assert mem.failures == {} and mem.converged_generation is None
            assert store.load_last_deploy("dialogue") is None
    (warning,) = _warnings(logs)
    assert warning["log_level"] == "warning" and warning["path"] == str(path) and warning["app"] == "dialogue"
    assert SENTINEL not in repr(logs)


def test_a_new_corruption_of_the_same_file_is_logged_again(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    with capture_logs() as logs:
        _write(store, "a", "memory.json", CORRUPT_MEMORY["failures is a list"])
        store.load_memory("a")
        _write(store, "a", "memory.json", json.dumps({"failures": {"r1": FAILURE}}))
        assert list(store.load_memory("a").failures) == ["r1"]  # repaired: read as written
        _write(store, "a", "memory.json", CORRUPT_MEMORY["failures is a list"])
        store.load_memory("a")
    assert len(_warnings(logs)) == 2


def test_memory_as_written_is_read_back(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    last = LastDeploy(at="2026-01-01T00:00:00Z", reconcile_id="abc", from_color=None, color="blue", image="dialogue:1", revision="r1", outcome="failed", message="boom")
    store.save_memory("a", Memory(failures={"r1": _failure()}, converged_generation="g1"), last)
    with capture_logs() as logs:
        again = store.load_memory("a")
        assert again.failures == {"r1": _failure()} and again.converged_generation == "g1"
        assert store.load_last_deploy("a") == last
    assert logs == []


def _failure() -> Failure:
    return Failure(**FAILURE)


def _converged(tmp_path: Path) -> tuple[FakeWorld, Reconciler, BlueGreenApp]:
    app = make_app()
    w = world_for(app)
    rec = reconciler(w, tmp_path / "state")
    assert rec.reconcile(app).result == "converged"
    return w, rec, app


@pytest.mark.parametrize("case", sorted(CORRUPT_STATUS))
def test_corrupt_status_is_absent_logged_once_and_rewritten(tmp_path: Path, case: str) -> None:
    _w, rec, app = _converged(tmp_path)
    path = _write(rec.store, app.name, "status.json", CORRUPT_STATUS[case])
    with capture_logs() as logs:
        s = rec.status_only(app)
        assert s.is_true("Ready")
        r = rec.reconcile(app)
    assert r.result == "converged" and r.status is not None and r.status.is_true("Ready")
    (warning,) = _warnings(logs)
    assert warning["path"] == str(path) and SENTINEL not in repr(logs)
    assert STATUS.parse(path.read_text()) == r.status  # rewritten in full


@pytest.mark.parametrize("case", sorted(CORRUPT_MEMORY))
def test_corrupt_memory_does_not_stop_the_reconcile_and_is_rewritten(tmp_path: Path, case: str) -> None:
    _w, rec, app = _converged(tmp_path)
    path = _write(rec.store, app.name, "memory.json", CORRUPT_MEMORY[case])
    with capture_logs() as logs:
        assert rec.status_only(app).is_true("Ready")
        assert rec.reconcile(app).result == "converged"
    assert len(_warnings(logs)) == 1 and SENTINEL not in repr(logs)
    with capture_logs() as logs:
        assert rec.store.load_memory(app.name).converged_generation is not None  # written again, valid
    assert logs == []
    assert SENTINEL not in path.read_text()


def test_status_round_trips_through_its_json(tmp_path: Path) -> None:
    _w, rec, app = _converged(tmp_path)
    bad = make_app(image="dialogue:bad", activeColor="green")
    r = rec.reconcile(bad)  # a failed deploy: Degraded, lastDeploy failed, a container that is not healthy
    assert r.result == "degraded" and r.status is not None and r.status.last_deploy is not None
    for s in (r.status, rec.status_only(bad)):
        assert STATUS.parse(STATUS.text(s)) == s
        assert render_text(STATUS.parse(STATUS.text(s))) == render_text(s)
    on_file = (rec.store.app_dir(app.name) / "status.json").read_text()
    assert STATUS.text(STATUS.parse(on_file)) == on_file


def test_status_json_keeps_its_keys(tmp_path: Path) -> None:
    """The shape monitoring, docs and scripts read (tests/test_real_*.py read it through the real CLI)."""
    _w, rec, app = _converged(tmp_path)
    status = STATUS.dump(rec.status_only(app))
    assert list(status) == [
        "app", "generation", "observedGeneration", "reconcileId", "updatedAt", "desired", "observed", "conditions", "plan", "lastDeploy",
    ]
    assert list(status["desired"]) == ["image", "activeColor", "revision", "standby"]
    assert list(status["observed"]) == ["containers", "route", "include", "marker", "serving"]
    assert list(status["observed"]["containers"]) == ["blue", "green"] and status["observed"]["containers"]["green"] is None
    assert list(status["observed"]["containers"]["blue"]) == [
        "name", "id", "image", "imageId", "digest", "state", "running", "healthy", "health", "revision", "upToDate", "port",
    ]
    assert [c["type"] for c in status["conditions"]] == ["Ready", "Progressing", "Degraded", "RollbackReady", "SecretsStale"]
    assert all(list(c) == ["type", "status", "reason", "message", "lastTransitionTime"] for c in status["conditions"])
    assert [c["status"] for c in status["conditions"]] == ["True", "False", "False", "False", "False"]
    assert list(status["plan"]) == ["actions", "blockers", "diffs"]
    assert list(status["lastDeploy"]) == ["at", "color", "from", "image", "message", "outcome", "reconcileId", "revision"]


def test_a_refused_status_names_the_field_not_the_content() -> None:
    with pytest.raises(Corrupt, match=r"^conditions: Input should be a valid array$") as refused:
        STATUS.parse(json.dumps({"app": "a", "generation": "g", "observedGeneration": "g", "reconcileId": "r", "updatedAt": "t",
                          "desired": {"image": "i", "activeColor": "blue", "revision": "r", "standby": "keep"},
                          "observed": {"containers": {"blue": None, "green": None},
                                       "route": {"reachable": False, "color": None, "upstream": "", "detail": ""},
                                       "include": {"path": "p", "present": False, "color": None, "managed": False},
                                       "marker": {"path": "m", "value": None}, "serving": None},
                          "conditions": SENTINEL, "plan": {"actions": [], "blockers": [], "diffs": []}, "lastDeploy": None}))
    assert SENTINEL not in str(refused.value)


# ----------------------------------------------------------------------------- the real command line


@pytest.fixture
def world(docker_client: Any, test_images: dict[str, str], app_name: str, nginx: NginxInstance, tmp_path: Path, session_id: str) -> Callable[..., World]:
    def make(**spec: Any) -> World:
        return World(docker_client, app_name, nginx, tmp_path, session_id, **spec)

    return make


def test_real_cli_corrupt_state_files_are_a_warning_not_an_internal_error(world: Callable[..., World]) -> None:
    w = world()
    w.once()
    app_dir = w.state / "apps" / w.app
    both = sorted(str(app_dir / f) for f in ("memory.json", "status.json"))
    cases = [
        (CORRUPT_STATUS["conditions is a number"], CORRUPT_MEMORY["failures is a list"]),
        (CORRUPT_STATUS["conditions hold a string"], CORRUPT_MEMORY["failure count is text"]),
        (CORRUPT_STATUS["list at top level"], CORRUPT_MEMORY["failedAt infinite"]),
        (CORRUPT_STATUS["generation is a huge number"], CORRUPT_MEMORY["lastDeploy is a number"]),
    ]
    for status_text, memory_text in cases:
        (app_dir / "status.json").write_text(status_text)
        (app_dir / "memory.json").write_text(memory_text)
        # --status reads both files and changes nothing; --once reads them, then writes both in full.
        for args, warned in ((("--status", "--json"), both), (("--once",), both), (("--status", "--json"), [])):
            r = w.run(*args)
            assert r.returncode == 0, r.explain()
            assert r.messages() == [], r.explain()  # no "internal error", no error line at all
            events = [e for e in r.logs() if e["event"] == "state.corrupt"]
            assert sorted(e["path"] for e in events) == warned and all(e["level"] == "warning" for e in events), r.explain()
            assert SENTINEL not in r.stdout + r.stderr
            if args == ("--once",):
                assert r.stdout == f"{w.app}: converged\n", r.explain()
            else:
                (entry,) = json.loads(r.stdout)
                assert STATUS.parse(json.dumps(entry)).is_true("Ready")
    w.assert_converged_on("blue", "v1")


@pytest.mark.parametrize("count", ["a", True, 10**30])
def test_unusable_failure_of_the_revision_being_deployed_is_forgotten_not_a_crash(tmp_path: Path, count: object) -> None:
    # The planner computes the retry time of exactly this failure: before, a TypeError ("a"), or a count
    # no JSON reader holds exactly (10**30) taken at face value.
    _w, rec, _app = _converged(tmp_path)
    new = make_app(image="dialogue:2", activeColor="green")
    rev = rec.plan_only(new)[0].revisions["green"]
    failure = {**FAILURE, "revision": rev, "count": count, "last_failed_at": rec.world.now()}
    _write(rec.store, new.name, "memory.json", json.dumps({"failures": {rev: failure}}))
    with capture_logs() as logs:
        r = rec.reconcile(new)
    assert r.result == "converged" and r.error is None, r
    assert len(_warnings(logs)) == 1


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_a_state_file_that_is_not_a_regular_file_is_absent_and_logged(tmp_path: Path, kind: str) -> None:
    store = StateStore(tmp_path / "state")
    path = store.app_dir("a") / "memory.json"
    path.parent.mkdir(parents=True)
    if kind == "symlink":
        target = tmp_path / "elsewhere.json"
        target.write_text(json.dumps({"convergedGeneration": SENTINEL}))
        path.symlink_to(target)
    else:
        os.mkfifo(path)  # a read that waited on it would block the run
    with capture_logs() as logs:
        assert store.load_memory("a").converged_generation is None
        assert store.load_last_deploy("a") is None
    (warning,) = _warnings(logs)
    assert warning["problem"].startswith("garbage (") and SENTINEL not in repr(logs)


def test_state_files_stay_readable_when_a_secret_equals_a_color_or_a_condition_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # State files are redacted before they are written (issue 10 item 13); what the controller reads back
    # typed (colors, True/False) must survive a secret that happens to equal it, or every pass would find
    # its own files corrupt.
    monkeypatch.setattr(logs, "_secrets", set())  # the registry is process-wide: leave none behind
    for secret in ("green", "blue", "True", "False", "dialogue"):
        register_secret(secret)
    w = world_for(make_app(activeColor="green"))
    rec = reconciler(w, tmp_path)
    with capture_logs() as captured:
        assert rec.reconcile(make_app(activeColor="green")).converged
        assert rec.reconcile(make_app(activeColor="blue")).converged  # a lastDeploy "from": "green"
        s = rec.status_only(make_app(activeColor="blue"))
    assert _warnings(captured) == []
    assert s.last_deploy is not None and s.last_deploy.from_color == "green" and s.is_true("Ready")
    assert STATUS.parse((rec.store.app_dir("dialogue") / "status.json").read_text()).is_true("Ready")
