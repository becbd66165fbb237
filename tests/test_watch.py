"""`reconcile --watch`: a real watch process (`python -m controller --watch`) on real Docker and a real nginx,
plus fast in-process tests of its spec reloading, retry delays and shared lock.

The integration tests run the watch with a long --resync (3600 s) unless they test the resync itself, so
whatever happens within seconds was caused by the trigger under test (a file event, a Docker event).
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, MutableMapping
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from controller.app.reconcile import Reconciler
from controller.app.requeue import Requeue, decide
from controller.kernel.errors import DockerUnavailable, LockBusy
from controller.runtime.watch import AppKind, Manager, PassLock, jittered, reconnect_delay
from controller.store.metrics import Metrics
from controller.store.state import Lock, StateStore
from controller.world.fake import FakeWorld
from tests.factories import app_doc
from tests.support.controller_run import (
    Snapshot,
    app_spec,
    container,
    get,
    read,
    routed_color,
    run_reconcile,
    served_version,
    start_reconcile,
    with_spec,
)
from tests.support.net import free_port
from tests.support.nginx import NginxInstance
from tests.support.wait import wait_until

# ------------------------------------------------------------------------------------ helpers


def save_atomically(path: Path, doc: dict[str, Any] | str) -> None:
    """What editors do: write a temporary file beside the spec, then rename it over the spec."""
    text = doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False)
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_text(text)
    os.replace(tmp, path)


def lock_is_free(state_dir: Path) -> bool:
    fd = os.open(state_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing drops the flock we may have taken
    return True


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics, parsed by prometheus-client's own parser: {(sample name, sorted labels): value}."""
    return parse_metrics(get(f"http://127.0.0.1:{port}/metrics").text)


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(m: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return m.get((name, tuple(sorted(labels.items()))))


class WatchProcess:
    """A `reconcile --watch` subprocess; its stderr (JSON log lines) goes to a file we can poll."""

    def __init__(self, spec_path: Path, state: Path, log_path: Path, *args: str) -> None:
        self.log_path = log_path
        self.state = state
        self.proc = start_reconcile(spec_path, state, "--watch", "--log-format", "json", *args, stderr_path=log_path)

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in (read(self.log_path) or "").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue  # a line being written
        return out

    def events(self, name: str, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.logs() if e.get("event") == name and all(e.get(k) == v for k, v in match.items())]

    def wait_event(self, name: str, timeout: float = 20.0, **match: Any) -> dict[str, Any]:
        self.assert_alive()
        found: list[dict[str, Any]] = wait_until(lambda: self.events(name, **match), timeout=timeout, message=f"log event {name}")
        return found[-1]

    def assert_alive(self) -> None:
        assert self.proc.poll() is None, f"watch exited with {self.proc.returncode}:\n{self.tail()}"

    def tail(self) -> str:
        return (read(self.log_path) or "")[-5000:]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> tuple[int, float]:
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"watch did not exit {timeout:g}s after {signal.Signals(sig).name}:\n{self.tail()}") from None
        return code, time.monotonic() - started


class Setup:
    """One app wired to the test's nginx; the watch process runs on its spec directory."""

    def __init__(self, client: Any, app: str, nginx: NginxInstance, tmp_path: Path, session_id: str) -> None:
        self.client, self.app, self.nginx, self.tmp = client, app, nginx, tmp_path
        self.state = tmp_path / "state-dir"
        self.specs = tmp_path / "specs"
        self.specs.mkdir()
        self.spec_path = self.specs / f"{app}.yaml"
        self.doc = app_spec(app, nginx, tmp_path, "bgtest:v1", "blue", session_id=session_id)
        self.ports: dict[str, int] = self.doc["spec"]["ports"]
        self.marker = Path(self.doc["spec"]["marker"])
        save_atomically(self.spec_path, self.doc)
        self.watches: list[WatchProcess] = []

    def set(self, **spec: Any) -> None:
        self.doc = with_spec(self.doc, **spec)
        save_atomically(self.spec_path, self.doc)

    def watch(self, *args: str) -> WatchProcess:
        w = WatchProcess(self.specs, self.state, self.tmp / f"watch{len(self.watches)}.log", *args)
        self.watches.append(w)
        return w

    def served(self) -> str | None:
        return served_version(self.nginx, self.app)

    def routed(self) -> str | None:
        return routed_color(self.nginx, self.app, self.ports)

    def wait_serving(self, version: str, timeout: float = 20.0) -> None:
        wait_until(lambda: self.served() == version, timeout=timeout, interval=0.05, message=f"nginx serving {version}")

    def snapshot(self) -> Snapshot:
        return Snapshot.take(self.client, self.app, self.nginx, self.marker, self.state)

    def close(self) -> None:
        for w in self.watches:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait(5)


@pytest.fixture
def setup(
    docker_client: Any, test_images: dict[str, str], app_name: str, nginx: NginxInstance, tmp_path: Path, session_id: str
) -> Iterator[Setup]:
    s = Setup(docker_client, app_name, nginx, tmp_path, session_id)
    try:
        yield s
    finally:
        s.close()


# ------------------------------------------------------------------------------------ real watch process


def test_spec_edit_leads_to_cutover(setup: Setup) -> None:
    port = free_port()
    w = setup.watch("--resync", "3600", "--metrics-port", str(port))
    setup.wait_serving("v1")
    w.wait_event("reconcile.done", result="converged")

    saved = time.time()
    setup.set(image="bgtest:v2", activeColor="green")
    setup.wait_serving("v2")
    took = time.time() - saved
    assert took < 10, f"cutover took {took:.1f}s after the save"
    # A reload is asynchronous: an old worker may still answer the control server for a moment.
    wait_until(lambda: setup.routed() == "green", timeout=5, interval=0.05, message="control server routes green")
    wait_until(lambda: read(setup.marker) == "green\n", timeout=5, message="marker green")  # written right after the switch
    changed = w.wait_event("spec.changed", app=setup.app)
    assert changed["file"] == str(setup.spec_path)
    blue = container(setup.client, f"{setup.app}-blue")
    assert blue is not None and blue.status == "running"  # standby: keep

    # The live-color gauge is set from the pass's final observation, after the switch: wait for that pass to end.
    wait_until(
        lambda: len(w.events("reconcile.done", app=setup.app, result="converged")) >= 2,
        timeout=20,
        message="the cutover pass to finish",
    )
    m = scrape(port)
    assert sample(m, "bluegreen_cutovers_total", app=setup.app, result="success") == 2  # blue at start, then green
    assert sample(m, "bluegreen_live_color", app=setup.app, color="green") == 1
    assert sample(m, "bluegreen_live_color", app=setup.app, color="blue") == 0
    assert (sample(m, "bluegreen_watch_triggers_total", source="spec") or 0) >= 1
    code, _ = w.stop()
    assert code == 0


def test_docker_kill_of_live_container_is_repaired_from_the_event(setup: Setup) -> None:
    w = setup.watch("--resync", "3600")
    setup.wait_serving("v1")
    w.wait_event("reconcile.done", result="converged")
    live = container(setup.client, f"{setup.app}-blue")
    assert live is not None

    killed = time.monotonic()
    live.kill()
    wait_until(lambda: setup.served() != "v1", timeout=5, interval=0.02, message="the kill to take traffic down")
    setup.wait_serving("v1", timeout=15)
    took = time.monotonic() - killed
    assert took < 10, f"serving again {took:.1f}s after the kill"
    again = container(setup.client, f"{setup.app}-blue")
    assert again is not None and again.status == "running"
    assert w.events("action.done", action="StartContainer") or w.events("action.done", action="CreateContainer")
    assert read(setup.marker) == "blue\n"
    assert w.stop()[0] == 0


def test_invalid_edit_changes_nothing_and_logs_one_error_event(setup: Setup) -> None:
    port = free_port()
    w = setup.watch("--resync", "3600", "--metrics-port", str(port))
    setup.wait_serving("v1")
    w.wait_event("reconcile.done", result="converged")
    before = setup.snapshot()
    passes = len(w.events("reconcile.done"))

    # A valid document with a typo: the new image must not be deployed, nothing may change.
    bad = with_spec(setup.doc, image="bgtest:v2", activeColor="green")
    bad["spec"]["helthCheck"] = bad["spec"].pop("healthCheck")
    save_atomically(setup.spec_path, bad)
    event = w.wait_event("spec.invalid")
    assert event["level"] == "error"
    assert event["file"] == str(setup.spec_path)
    assert "spec.helthCheck: unknown field" in event["error"]
    assert event["app"] == setup.app and event["in_force"]
    m = scrape(port)
    assert sample(m, "bluegreen_spec_errors") == 1
    assert sample(m, "bluegreen_reconcile_runs_total", app=setup.app, result="invalid") == 1

    # Broken YAML next, then a resync (SIGHUP-free: the periodic re-read) must not repeat the event.
    save_atomically(setup.spec_path, "spec: [unclosed\n")
    wait_until(lambda: len(w.events("spec.invalid")) == 2, timeout=10, message="second invalid event")
    time.sleep(1.0)  # give a wrong extra event (a re-read reporting again) the chance to show up
    invalid = w.events("spec.invalid")
    assert len(invalid) == 2, invalid
    assert "invalid YAML" in invalid[1]["error"]
    assert setup.served() == "v1"
    assert setup.snapshot() == before
    assert len(w.events("reconcile.done")) == passes  # an invalid edit triggers no pass

    # A valid edit is applied at once.
    setup.set(image="bgtest:v2", activeColor="green")
    setup.wait_serving("v2")
    w.wait_event("spec.valid", file=str(setup.spec_path))
    assert sample(scrape(port), "bluegreen_spec_errors") == 0
    assert w.stop()[0] == 0


def test_sigterm_during_health_wait_exits_cleanly_without_a_half_switch(setup: Setup) -> None:
    w = setup.watch("--resync", "3600")
    setup.wait_serving("v1")
    w.wait_event("reconcile.done", result="converged")
    include_before = read(setup.nginx.upstream_file(setup.app))

    setup.set(image="bgtest:never", activeColor="green", healthCheck={"timeoutSeconds": 120})
    w.wait_event("action.start", action="WaitHealthy", color="green")
    code, took = w.stop(signal.SIGTERM)
    assert code == 0, w.tail()
    assert took < 5, f"exit took {took:.1f}s"
    # No half switch: include, Nginx's live route and the marker all still say blue.
    assert read(setup.nginx.upstream_file(setup.app)) == include_before
    assert setup.routed() == "blue"
    assert read(setup.marker) == "blue\n"
    assert setup.served() == "v1"
    assert lock_is_free(setup.state)
    stopped = w.events("watch.stopped")
    assert stopped and stopped[-1]["lock_held"] is False
    # A stop is no failed deploy: the revision is not held against (no backoff when the service comes back).
    memory = json.loads((setup.state / "apps" / setup.app / "memory.json").read_text())
    assert memory.get("failures") == {}
    # The next run resumes from what it observes (and here fails fast on its own terms, not on a backoff).
    r = run_reconcile(setup.specs, setup.state, "--plan")
    assert r.returncode == 1 and "BackingOff" not in r.stdout, r.explain()


def test_health_wait_of_one_app_does_not_block_another(
    docker_client: Any, test_images: dict[str, str], app_name: str, tmp_path: Path, session_id: str
) -> None:
    other = f"{app_name}x"
    ng = NginxInstance.start(tmp_path / "nginx2", [app_name, other])
    specs = tmp_path / "specs"
    specs.mkdir()
    docs = {a: app_spec(a, ng, tmp_path, "bgtest:v1", "blue", session_id=session_id) for a in (app_name, other)}
    for a, d in docs.items():
        save_atomically(specs / f"{a}.yaml", d)
    w = WatchProcess(specs, tmp_path / "state", tmp_path / "watch.log", "--resync", "3600")
    try:
        for a in docs:

            def serving_v1(a: str = a) -> bool:
                return served_version(ng, a) == "v1"

            wait_until(serving_v1, timeout=20, message=f"{a} serving v1")
        save_atomically(specs / f"{app_name}.yaml", with_spec(docs[app_name], image="bgtest:never", activeColor="green", healthCheck={"timeoutSeconds": 120}))
        w.wait_event("action.start", action="WaitHealthy", app=app_name)
        save_atomically(specs / f"{other}.yaml", with_spec(docs[other], image="bgtest:v2", activeColor="green"))
        wait_until(lambda: served_version(ng, other) == "v2", timeout=15, message=f"{other} cut over while {app_name} waits")
        assert not w.events("action.done", action="WaitHealthy", app=app_name, color="green")  # still waiting
        assert served_version(ng, app_name) == "v1"
        assert w.stop()[0] == 0
    finally:
        if w.proc.poll() is None:
            w.proc.kill()
        ng.stop()
        for c in docker_client.containers.list(all=True, filters={"label": f"bluegreen.app={other}"}):
            c.remove(force=True)


def at(event: dict[str, Any]) -> float:
    """A log line's time (structlog's ISO timestamp, UTC) as a Unix time."""
    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


def test_requeue_a_blocked_app_waits_for_a_change_a_failed_deploy_for_its_retry_instant(
    docker_client: Any, test_images: dict[str, str], app_name: str, tmp_path: Path, session_id: str
) -> None:
    blocked, failing = app_name, f"{app_name}x"
    ng = NginxInstance.start(tmp_path / "nginx2", [blocked, failing])
    specs = tmp_path / "specs"
    specs.mkdir()
    docs = {a: app_spec(a, ng, tmp_path, "bgtest:v1", "blue", session_id=session_id) for a in (blocked, failing)}
    for a, d in docs.items():
        save_atomically(specs / f"{a}.yaml", d)
    port = free_port()
    # A long resync, so every pass below was asked for by a requeue, a spec edit or a Docker event.
    w = WatchProcess(specs, tmp_path / "state", tmp_path / "watch.log", "--resync", "3600", "--backoff-base", "4", "--metrics-port", str(port))
    try:
        for a in docs:
            wait_until(partial(lambda a: served_version(ng, a) == "v1", a), timeout=20, message=f"{a} serving v1")
            w.wait_event("reconcile.done", app=a, result="converged")
        # The live color's image changed without a flip: LiveColorOutdated, which only a spec edit lifts.
        save_atomically(specs / f"{blocked}.yaml", with_spec(docs[blocked], image="bgtest:v2"))
        # A deploy that never gets healthy: it fails after 2 s and is held back for --backoff-base (4 s).
        save_atomically(specs / f"{failing}.yaml", with_spec(docs[failing], image="bgtest:never", activeColor="green", healthCheck={"timeoutSeconds": 2}))
        edited = time.time()

        failed = w.wait_event("action.failed", app=failing, action="WaitHealthy", timeout=30)
        done = w.wait_event("reconcile.done", app=failing, image="bgtest:never", result="degraded")
        retry = w.wait_event("watch.retry", app=failing, reason="BackingOff")
        # The memory's instant (4 s after the failure, less the pass's re-observation), not 1 s; not jittered.
        assert 2.5 <= retry["seconds"] <= 4.0, retry
        memory = json.loads((tmp_path / "state" / "apps" / failing / "memory.json").read_text())
        [failure] = memory["failures"].values()
        assert failure["count"] == 1
        retry_at = failure["last_failed_at"] + 4
        def deploy_passes() -> list[dict[str, Any]]:
            return w.events("reconcile.plan", app=failing, image="bgtest:never")

        wait_until(lambda: len(deploy_passes()) >= 2, timeout=20, message="the failed deploy retried")
        plans = deploy_passes()
        # The next pass after the failure is the retry itself, at the retry instant: no pass in between
        # (the old 1 s, 2 s, ... requeue planned BackingOff at +1 s and +3 s and retried only at +7 s).
        second = plans[1]
        assert any(a.startswith("RemoveContainer(green)") or a.startswith("CreateContainer(green)") for a in second["actions"]), second
        assert "BackingOff" not in second["blockers"], second
        assert retry_at - 0.01 <= at(second) <= retry_at + 2.5, (at(failed), at(done), retry_at, at(second))
        assert at(second) - at(done) >= 2.5  # no pass in between (old policy: a BackingOff plan at +1 s)
        w.wait_event("action.failed", app=failing, action="WaitHealthy", timeout=15)
        wait_until(lambda: len(w.events("action.failed", app=failing, action="WaitHealthy")) == 2, timeout=15, message="second failure")

        # Meanwhile (~9 s) the blocked app had exactly one pass: the one its edit asked for.
        assert time.time() - edited > 7
        blocked_passes = w.events("reconcile.done", app=blocked, image="bgtest:v2")
        assert [e["result"] for e in blocked_passes] == ["blocked"], blocked_passes
        idle = w.events("watch.idle", app=blocked)
        assert idle and idle[-1]["reason"] == "LiveColorOutdated"
        assert not w.events("watch.retry", app=blocked)
        m = scrape(port)
        assert sample(m, "bluegreen_reconcile_runs_total", app=blocked, result="blocked") == 1
        assert sample(m, "bluegreen_reconcile_runs_total", app=blocked, result="converged") == 1

        # A change still moves it at once: the flip the blocker asks for deploys v2.
        save_atomically(specs / f"{blocked}.yaml", with_spec(docs[blocked], image="bgtest:v2", activeColor="green"))
        wait_until(lambda: served_version(ng, blocked) == "v2", timeout=15, message=f"{blocked} cut over after the flip")
        assert served_version(ng, failing) == "v1"  # the failed deploy never took traffic
        assert w.stop()[0] == 0
    finally:
        if w.proc.poll() is None:
            w.proc.kill()
        ng.stop()
        for c in docker_client.containers.list(all=True, filters={"label": f"bluegreen.app={failing}"}):
            c.remove(force=True)


def test_once_interleaves_with_an_idle_watch_and_resync_repairs_file_drift(setup: Setup) -> None:
    w = setup.watch("--resync", "1")
    setup.wait_serving("v1")
    w.wait_event("reconcile.done", result="converged")
    # The idle watch holds no lock: a cron run gets it at once.
    r = run_reconcile(setup.specs, setup.state, "--once", "--lock-timeout", "5")
    assert r.returncode == 0, r.explain()
    assert r.elapsed < 5
    # The marker is not watched by anything but the resync: it repairs it within a period or two.
    setup.marker.write_text("garbage\n")
    wait_until(lambda: read(setup.marker) == "blue\n", timeout=10, message="marker repaired by the resync")
    assert w.stop()[0] == 0


def test_sighup_rereads_and_resyncs_now(setup: Setup) -> None:
    w = setup.watch("--resync", "3600")
    setup.wait_serving("v1")
    w.wait_event("reconcile.done", result="converged")
    # Resync now: the marker is wrong, and nothing but a resync looks at it (the next one is an hour away).
    setup.marker.write_text("green\n")
    w.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: read(setup.marker) == "blue\n", timeout=10, message="marker repaired after SIGHUP")
    w.wait_event("watch.sighup")
    # Re-read: a spec change the file watcher cannot see, written in place through a hard link outside the
    # watched directory (inotify reports it to that other directory only). Only a re-read of the specs finds it.
    outside = setup.tmp / "outside"
    outside.mkdir()
    os.link(setup.spec_path, outside / setup.spec_path.name)
    (outside / setup.spec_path.name).write_text(yaml.safe_dump(with_spec(setup.doc, image="bgtest:v2", activeColor="green"), sort_keys=False))
    assert w.events("spec.changed") == []
    w.proc.send_signal(signal.SIGHUP)
    changed = w.wait_event("spec.changed", app=setup.app)
    assert changed["file"] == str(setup.spec_path)
    events = [e.get("event") for e in w.logs()]
    hups = [i for i, e in enumerate(events) if e == "watch.sighup"]
    assert len(hups) == 2 and events.index("spec.changed") > hups[1], events  # found by the second signal's re-read
    setup.wait_serving("v2", timeout=60)  # the spec read again is the one in force: green deployed
    wait_until(lambda: read(setup.marker) == "green\n", timeout=20, message="marker of the new spec")
    assert w.stop()[0] == 0


def test_metrics_endpoint_values(setup: Setup) -> None:
    port = free_port()
    started = time.time()
    w = setup.watch("--resync", "3600", "--metrics-port", str(port))
    setup.wait_serving("v1")
    w.wait_event("reconcile.done", result="converged")
    m = wait_until(lambda: (lambda m: m if sample(m, "bluegreen_app_converged", app=setup.app) == 1 else {})(scrape(port)))
    app = setup.app
    assert (sample(m, "bluegreen_reconcile_runs_total", app=app, result="converged") or 0) >= 1
    assert sample(m, "bluegreen_reconcile_duration_seconds_count", app=app) == sum(
        v for (n, labels), v in m.items() if n == "bluegreen_reconcile_runs_total" and ("app", app) in labels
    )
    assert sample(m, "bluegreen_cutovers_total", app=app, result="success") == 1
    assert sample(m, "bluegreen_live_color", app=app, color="blue") == 1
    assert sample(m, "bluegreen_app_condition", app=app, condition="Ready") == 1
    assert sample(m, "bluegreen_app_condition", app=app, condition="Degraded") == 0
    assert started <= (sample(m, "bluegreen_last_success_timestamp_seconds", app=app) or 0) <= time.time()
    assert started <= (sample(m, "bluegreen_last_run_timestamp_seconds") or 0) <= time.time()
    assert sample(m, "bluegreen_docker_events_connected") == 1
    assert (sample(m, "bluegreen_watch_triggers_total", source="start") or 0) >= 1
    build = [labels for (n, labels), _ in m.items() if n == "bluegreen_build_info"]
    assert build and dict(build[0])["version"]

    # A failed deploy shows up as a health-check failure, a failed cutover and Degraded.
    setup.set(image="bgtest:never", activeColor="green", healthCheck={"timeoutSeconds": 2})
    w.wait_event("reconcile.done", result="degraded", timeout=30)
    m = scrape(port)
    assert sample(m, "bluegreen_health_check_failures_total", app=app, color="green") == 1
    assert sample(m, "bluegreen_cutovers_total", app=app, result="failed") == 1
    assert sample(m, "bluegreen_app_condition", app=app, condition="Degraded") == 1
    assert sample(m, "bluegreen_app_converged", app=app) == 0
    assert sample(m, "bluegreen_live_color", app=app, color="blue") == 1
    assert w.stop()[0] == 0


def test_watch_refuses_textfile_and_a_taken_metrics_port(setup: Setup) -> None:
    r = run_reconcile(setup.specs, setup.state, "--watch", "--metrics-textfile", str(setup.tmp / "m.prom"), timeout=20)
    assert r.returncode == 2 and "--metrics-textfile is for --once" in r.stderr, r.explain()
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = run_reconcile(setup.specs, setup.state, "--watch", "--metrics-port", str(s.getsockname()[1]), timeout=20)
    assert r.returncode == 1 and "cannot serve metrics" in r.stderr, r.explain()
    assert container(setup.client, f"{setup.app}-blue") is None  # refused before doing anything


# ------------------------------------------------------------------------------------ in-process


def _watcher(tmp_path: Path, path: Path) -> Manager:
    world = FakeWorld()
    metrics = Metrics()
    store = StateStore(tmp_path / "state")
    return Manager(path, [AppKind(Reconciler(world, store, metrics))], metrics, tmp_path / "state")


def _write(path: Path, doc: dict[str, Any] | str) -> None:
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))


def test_reload_keeps_the_last_valid_spec_and_reports_each_problem_once(
    tmp_path: Path, captured_logs: list[MutableMapping[str, Any]]
) -> None:
    d = tmp_path / "specs"
    d.mkdir()
    _write(d / "a.yaml", app_doc("a"))
    _write(d / "b.yaml", app_doc("b", ports={"blue": 19001, "green": 19002}))
    w = _watcher(tmp_path, d)
    assert sorted(w.reload("start")) == ["a", "b"]
    first = w.workers["a"].obj

    _write(d / "a.yaml", "metadata: {name: a}\nspec: [")
    assert w.reload("spec") == []
    assert w.reload("resync") == []  # re-read: same problem, no second event
    assert w.workers["a"].obj is first
    assert w.errors_by_file == {d / "a.yaml": w.errors_by_file[d / "a.yaml"]}
    assert w.metrics.registry.get_sample_value("bluegreen_spec_errors") == 1

    # b tries to take a's ports: refused, b keeps its last valid spec.
    _write(d / "b.yaml", app_doc("b"))
    assert w.reload("spec") == []
    assert w.workers["b"].obj.spec.ports.blue == 19001

    _write(d / "a.yaml", app_doc("a", image="dialogue:2"))
    _write(d / "b.yaml", app_doc("b", ports={"blue": 19001, "green": 19002}))
    assert w.reload("spec") == ["a"]
    assert w.workers["a"].obj.spec.image == "dialogue:2"
    assert w.errors_by_file == {}

    (d / "b.yaml").unlink()
    assert w.reload("spec") == []
    assert "b" not in w.workers

    lines = captured_logs
    invalid = [e for e in lines if e["event"] == "spec.invalid"]
    assert [(Path(e["file"]).name, e["app"]) for e in invalid] == [("a.yaml", "a"), ("b.yaml", "b")]
    assert "invalid YAML" in invalid[0]["error"] and "both use port" in invalid[1]["error"]
    assert [e["app"] for e in lines if e["event"] == "spec.removed"] == ["b"]
    sample = w.metrics.registry.get_sample_value
    assert sample("bluegreen_reconcile_runs_total", {"app": "a", "result": "invalid"}) == 1
    assert sample("bluegreen_reconcile_runs_total", {"app": "b", "result": "invalid"}) == 1


def test_retry_delays_double_up_to_a_cap_and_resync_is_jittered() -> None:
    # The requeue after the n-th consecutive temporary error, and the reconnects of the file and event watches.
    down = DockerUnavailable("Docker daemon unreachable")
    assert [decide(None, down, now=0.0, failures=n - 1).after for n in (1, 2, 3, 4, 7, 8, 30)] == [1, 2, 4, 8, 60, 60, 60]
    assert [reconnect_delay(n) for n in (1, 2, 3, 5, 6, 30)] == [1, 2, 4, 16, 30, 30]
    rng = random.Random(4)
    values = [jittered(60, rng) for _ in range(200)]
    assert all(54 <= v <= 66 for v in values) and max(values) - min(values) > 6


def test_pass_lock_is_shared_by_workers_and_excludes_other_runs(tmp_path: Path) -> None:
    stop = threading.Event()
    lock = PassLock(tmp_path, 0.3, stop)
    with lock.held():
        with lock.held():  # a second worker of the same process
            assert lock.holding
            with pytest.raises(LockBusy), Lock(tmp_path, 0):  # cron --once
                pass
        assert lock.holding
    assert not lock.holding
    with Lock(tmp_path, 0):  # released: cron gets it; now the watch must wait, then give up
        started = time.monotonic()
        with pytest.raises(LockBusy, match=r"waited 0.3s"), lock.held():
            pass
        assert 0.25 < time.monotonic() - started < 2
        stop.set()  # a stop ends the wait at once
        started = time.monotonic()
        with pytest.raises(LockBusy), PassLock(tmp_path, 30, stop).held():
            pass
        assert time.monotonic() - started < 1




def test_one_manager_routes_one_event_stream_by_label_and_wakes_only_the_dependents_of_an_accessory(tmp_path: Path) -> None:
    from controller.accessory.reconcile import AccessoryRunner
    from controller.runtime.accessory_kind import AccessoryKind
    from controller.world.fake import FakeImage

    d = tmp_path / "specs"
    d.mkdir()
    _write(d / "a.yaml", app_doc("a", dependsOn=["cache"]))
    _write(d / "b.yaml", app_doc("b", ports={"blue": 19001, "green": 19002}))
    _write(d / "cache.yaml", {"apiVersion": "bluegreen/v1", "kind": "Accessory", "metadata": {"name": "cache"}, "spec": {"image": "redis:7", "healthCheck": {"command": ["redis-cli", "ping"], "timeoutSeconds": 1}}})
    world = FakeWorld(images={"redis:7": FakeImage(execs={("redis-cli", "ping"): (0, "PONG")})})  # one World, both kinds
    metrics = Metrics()
    store = StateStore(tmp_path / "state")
    runner = AccessoryRunner(world, store, metrics.registry)
    m = Manager(d, [AppKind(Reconciler(world, store, metrics, dependencies=runner.dependencies)), AccessoryKind(runner)], metrics, tmp_path / "state")
    assert m.reload("start") == ["a", "b", "cache"]
    assert {n: w.kind.name for n, w in m.workers.items()} == {"a": "app", "b": "app", "cache": "accessory"}
    # One stream: every kind's actions, no label filter (Docker ANDs labels); routed by label here.
    assert m.event_filters() == {"type": ["container"], "event": ["destroy", "die", "health_status", "kill", "oom", "start", "stop"]}

    def event(action: str, **labels: str) -> dict[str, Any]:
        return {"Type": "container", "Action": action, "Actor": {"Attributes": {"name": "x", **labels}}}

    def pending() -> list[str]:
        return sorted(n for n, w in m.workers.items() if w.pending)

    m._on_event(event("start", **{"bluegreen.app": "a"}))  # not an app event
    m._on_event(event("die", **{"bluegreen.app": "cache"}))  # an app label naming an accessory: not the app kind's
    m._on_event(event("die", **{"bluegreen.accessory": "nope"}))  # no such accessory
    assert pending() == []
    m._on_event(event("health_status: unhealthy", **{"bluegreen.app": "b"}))
    m._on_event(event("kill", **{"bluegreen.accessory": "cache"}))
    assert pending() == ["b", "cache"]
    for w in m.workers.values():
        w._due = None  # as the worker thread does when it takes the pass

    # The accessory's first pass creates it (ready): the app whose dependsOn names it gets a pass, the other not.
    cache = m.workers["cache"]
    cache._pass(cache.obj, {"test"}, None)
    assert cache.last_result.result == "converged" and cache.last_requeue == Requeue(None, "converged")
    assert pending() == ["a"] and m.workers["a"]._sources == {"accessory"}
    m.workers["a"]._due = None
    cache._pass(cache.obj, {"test"}, None)  # still ready: nobody else is woken
    assert pending() == []

    world.containers["cache"].broken = True  # unhealthy: not converged, tried again in RETRY; its dependents woken
    cache._pass(cache.obj, {"test"}, None)
    assert cache.last_requeue is not None and cache.last_requeue.after == 5.0 and not cache.last_requeue.backing_off
    assert pending() == ["a", "cache"]
    assert runner.dependencies(m.workers["a"].obj) != {}  # what a's next pass gates its new color on
