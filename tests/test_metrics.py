"""Prometheus metrics: the textfile `reconcile --once --metrics-textfile` writes (real Docker and nginx),
and the `Metrics` helpers, all read back with prometheus-client's own parser.
"""

from __future__ import annotations

import stat
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller import __version__
from controller.kernel.errors import HostError
from controller.store.metrics import (
    APP_CONDITION,
    APP_CONVERGED,
    BUILD_INFO,
    CUTOVERS,
    DOCKER_EVENTS_CONNECTED,
    DRIFT_REPAIRS,
    HEALTH_CHECK_FAILURES,
    LAST_RUN,
    LAST_SUCCESS,
    LIVE_COLOR,
    RECONCILE_DURATION,
    RECONCILE_RUNS,
    SPEC_ERRORS,
    WATCH_TRIGGERS,
    Metrics,
    WatchMetrics,
)
from tests.support.controller_run import app_spec, run_reconcile, write_spec
from tests.support.nginx import NginxInstance

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: Samples, name: str, **labels: str) -> float | None:
    return m.get((name, tuple(sorted(labels.items()))))


def names(m: Samples) -> set[str]:
    return {n for n, _ in m}


# ------------------------------------------------------------------------------------ unit


def test_textfile_is_written_atomically_and_parses(tmp_path: Path) -> None:
    m = Metrics()
    m.reconcile_runs.labels(app="a", result="converged").inc()
    m.set_live_color("a", "green")
    m.set_conditions("a", {"Ready": True, "Degraded": False})
    path = tmp_path / "textfile" / "bluegreen.prom"
    path.parent.mkdir()
    path.write_text("old content, about to be replaced\n")
    m.write_textfile(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["bluegreen.prom"]  # no temporary file left
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # node_exporter runs as another user
    s = parse(path.read_text())
    assert value(s, RECONCILE_RUNS + "_total", app="a", result="converged") == 1
    assert value(s, LIVE_COLOR, app="a", color="green") == 1
    assert value(s, LIVE_COLOR, app="a", color="blue") == 0
    assert value(s, APP_CONDITION, app="a", condition="Ready") == 1
    assert value(s, APP_CONDITION, app="a", condition="SecretsStale") == 0
    assert value(s, BUILD_INFO + "_info", version=__version__, python=__import__("platform").python_version()) == 1


def test_textfile_write_failure_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "bluegreen.prom"
    path.mkdir()  # something in the way that os.replace cannot replace
    (path / "keep").write_text("x")
    with pytest.raises(HostError):  # the one atomic write (controller/kernel/files.py) says what failed in one line
        Metrics().write_textfile(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bluegreen.prom"]


def test_invalid_and_unreachable_passes_count_as_runs() -> None:
    m = Metrics()
    before = time.time()
    m.invalid_spec("a")
    m.unreachable("b")
    s = parse(m.exposition().decode())
    assert value(s, RECONCILE_RUNS + "_total", app="a", result="invalid") == 1
    assert value(s, RECONCILE_RUNS + "_total", app="b", result="error") == 1
    assert value(s, APP_CONVERGED, app="b") == 0
    assert before <= (value(s, LAST_RUN) or 0) <= time.time()


def test_watch_metrics_share_the_registry_and_stay_out_of_once() -> None:
    once = Metrics()
    assert not names(parse(once.exposition().decode())) & {DOCKER_EVENTS_CONNECTED, SPEC_ERRORS}
    watch = Metrics()
    wm = WatchMetrics(watch.registry)
    wm.triggers.labels(source="docker").inc()
    wm.docker_events_connected.set(1)
    s = parse(watch.exposition().decode())
    assert value(s, WATCH_TRIGGERS + "_total", source="docker") == 1
    assert value(s, DOCKER_EVENTS_CONNECTED) == 1
    assert value(s, SPEC_ERRORS) == 0


# ------------------------------------------------------------------------------------ --once, real parts


@pytest.fixture
def spec_dir(
    docker_client: Any, test_images: dict[str, str], app_name: str, nginx: NginxInstance, tmp_path: Path, session_id: str
) -> tuple[Path, dict[str, Any]]:
    doc = app_spec(app_name, nginx, tmp_path, "bgtest:v1", "blue", session_id=session_id)
    write_spec(tmp_path / "specs" / f"{app_name}.yaml", doc)
    return tmp_path / "specs", doc


def test_once_textfile_after_a_deploy(spec_dir: tuple[Path, dict[str, Any]], app_name: str, tmp_path: Path) -> None:
    specs, _doc = spec_dir
    textfile = tmp_path / "node" / "bluegreen.prom"
    started = time.time()
    r = run_reconcile(specs, tmp_path / "state", "--once", "--metrics-textfile", str(textfile))
    assert r.returncode == 0, r.explain()
    s = parse(textfile.read_text())
    assert value(s, RECONCILE_RUNS + "_total", app=app_name, result="converged") == 1
    assert value(s, RECONCILE_DURATION + "_count", app=app_name) == 1
    assert 0 < (value(s, RECONCILE_DURATION + "_sum", app=app_name) or 0) < r.elapsed
    assert value(s, CUTOVERS + "_total", app=app_name, result="success") == 1
    assert value(s, LIVE_COLOR, app=app_name, color="blue") == 1
    assert value(s, APP_CONVERGED, app=app_name) == 1
    assert value(s, APP_CONDITION, app=app_name, condition="Ready") == 1
    assert value(s, APP_CONDITION, app=app_name, condition="Degraded") == 0
    assert started <= (value(s, LAST_SUCCESS, app=app_name) or 0) <= time.time()
    assert started <= (value(s, LAST_RUN) or 0) <= time.time()
    assert not any(n.startswith(HEALTH_CHECK_FAILURES) or n.startswith(DRIFT_REPAIRS) for n in names(s))

    # Drift (the marker deleted by hand) is repaired and counted by kind on the next run.
    (tmp_path / "state" / app_name / "active").unlink()
    r = run_reconcile(specs, tmp_path / "state", "--once", "--metrics-textfile", str(textfile))
    assert r.returncode == 0, r.explain()
    s = parse(textfile.read_text())
    assert value(s, DRIFT_REPAIRS + "_total", app=app_name, kind="marker") == 1
    assert value(s, CUTOVERS + "_total", app=app_name, result="success") == 1  # continued from the state dir


def test_once_textfile_counts_invalid_specs_and_an_unreachable_docker(
    spec_dir: tuple[Path, dict[str, Any]], app_name: str, tmp_path: Path
) -> None:
    specs, doc = spec_dir
    broken = dict(doc, metadata={"name": f"{app_name}-broken"}, spec={**doc["spec"], "imagee": "typo"})
    write_spec(specs / "broken.yaml", broken)
    (specs / "garbage.yaml").write_text("{{{")
    textfile = tmp_path / "bluegreen.prom"
    r = run_reconcile(specs, tmp_path / "state", "--once", "--metrics-textfile", str(textfile))
    assert r.returncode == 2, r.explain()  # the valid app was still reconciled
    s = parse(textfile.read_text())
    assert value(s, RECONCILE_RUNS + "_total", app=f"{app_name}-broken", result="invalid") == 1
    assert value(s, RECONCILE_RUNS + "_total", app="garbage", result="invalid") == 1  # no name: the file stem
    assert value(s, RECONCILE_RUNS + "_total", app=app_name, result="converged") == 1

    # Nothing valid at all: still a textfile saying so (cron's failures must reach monitoring).
    only_bad = tmp_path / "only-bad"
    only_bad.mkdir()
    (only_bad / "x.yaml").write_text("{{{")
    r = run_reconcile(only_bad, tmp_path / "state", "--once", "--metrics-textfile", str(textfile))
    assert r.returncode == 2, r.explain()
    s = parse(textfile.read_text())
    assert value(s, RECONCILE_RUNS + "_total", app="x", result="invalid") == 1
    assert value(s, LAST_RUN) is not None

    # Docker unreachable: an error run per app, not converged, and the run's timestamp.
    (specs / "broken.yaml").unlink()
    (specs / "garbage.yaml").unlink()
    r = run_reconcile(
        specs, tmp_path / "state", "--once", "--docker-url", f"unix://{tmp_path}/no-docker.sock", "--metrics-textfile", str(textfile)
    )
    assert r.returncode == 1, r.explain()
    s = parse(textfile.read_text())
    assert value(s, RECONCILE_RUNS + "_total", app=app_name, result="error") == 1
    assert value(s, APP_CONVERGED, app=app_name) == 0
    assert value(s, LAST_RUN) is not None


def test_a_run_that_exports_nothing_counts_into_null_metrics() -> None:
    """--plan, --status and --once without --metrics-textfile: every metric of `Metrics` takes the same calls and
    records nothing; nothing is registered (tests/test_layering.py: prometheus_client is not even imported)."""
    from prometheus_client import Counter, Gauge, Histogram

    from controller.store.metrics import NullMetrics

    real, null = Metrics(), NullMetrics()
    assert null.registry is None
    for name, metric in vars(real).items():
        if not isinstance(metric, (Counter, Gauge, Histogram)):
            continue
        labels = {k: "x" for k in metric._labelnames}
        child = getattr(null, name).labels(**labels) if labels else getattr(null, name)
        for call, arg in (("inc", 1), ("set", 1), ("observe", 0.5)):
            if hasattr(metric.labels(**labels) if labels else metric, call):
                getattr(child, call)(arg)
    null.set_live_color("a", "blue")
    null.set_conditions("a", {"Ready": True})
    null.invalid_spec("a")
    null.unreachable("a")
    null.set_release("a", (2, "app:2", "deploy", 1.0))  # the live release, then another: the old series removed
    null.set_release("a", (3, "app:3", "rollback", 2.0))
    null.set_release("a", None)
    null.notification_failed("dropped")
    with pytest.raises(AttributeError):
        _ = null._not_a_metric
