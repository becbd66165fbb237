"""Counters that survive cron (controller/store/counters.py): `--once --metrics-textfile` continues them from the
state dir; a corrupt or hostile counters.json means starting from 0 with a warning, never a crash or a
followed link. Real CLI runs against real dockerd and nginx for the cron route."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.store.counters import COUNTERS_FILE, carry_over
from controller.store.metrics import CUTOVERS, DRIFT_REPAIRS, RECONCILE_RUNS, Metrics
from tests.support.controller_run import World, run_reconcile
from tests.support.nginx import NginxInstance


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def counted(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_a_run_adds_its_counts_to_the_stored_totals(tmp_path: Path) -> None:
    for _ in range(3):  # three cron runs, each a fresh Metrics()
        m = Metrics()
        m.reconcile_runs.labels(app="a", result="converged").inc()
        m.drift_repairs.labels(app="a", kind="marker").inc(2)
        carry_over(m, tmp_path)
    assert counted(m, f"{RECONCILE_RUNS}_total", app="a", result="converged") == 3
    assert counted(m, f"{DRIFT_REPAIRS}_total", app="a", kind="marker") == 6
    # A series of an earlier run that this run did not touch is still exported (no series vanishes).
    m = Metrics()
    carry_over(m, tmp_path)
    assert counted(m, f"{RECONCILE_RUNS}_total", app="a", result="converged") == 3
    assert json.loads((tmp_path / COUNTERS_FILE).read_text())["format"] == 1


HOSTILE: dict[str, Callable[[Path], object]] = {
    "not JSON": lambda p: p.write_text("{torn"),
    "NaN": lambda p: p.write_text('{"format": 1, "counters": {"bluegreen_cutovers": [{"labels": {}, "value": NaN}]}}'),
    "negative": lambda p: p.write_text('{"format": 1, "counters": {"bluegreen_cutovers": [{"labels": {"app": "a", "result": "success"}, "value": -5}]}}'),
    "wrong shape": lambda p: p.write_text('{"format": 1, "counters": [1, 2]}'),
    "another format": lambda p: p.write_text('{"format": 99, "counters": {}}'),
    "deep nesting": lambda p: p.write_text("[" * 100_000),
    "too big": lambda p: p.write_bytes(b" " * (5 * 1024 * 1024)),
    "a FIFO": lambda p: os.mkfifo(p),
    "a directory": lambda p: p.mkdir(),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_corrupt_or_hostile_file_means_starting_from_zero_with_a_warning(
    kind: str, tmp_path: Path, captured_logs: list[MutableMapping[str, Any]]
) -> None:
    path = tmp_path / COUNTERS_FILE
    HOSTILE[kind](path)
    m = Metrics()
    m.cutovers.labels(app="a", result="success").inc()
    done = threading.Event()

    def run() -> None:
        carry_over(m, tmp_path)
        done.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert done.wait(20), "carry_over blocked"  # a FIFO must not hang the run
    assert counted(m, f"{CUTOVERS}_total", app="a", result="success") == 1  # this run's own count, from 0
    assert [e["event"] for e in captured_logs if e["log_level"] == "warning"] == ["counters.corrupt"], captured_logs
    # Rewritten as a regular file (an empty directory in its place is replaced, like any state file's).
    assert json.loads(path.read_text())["counters"][CUTOVERS] == [{"labels": {"app": "a", "result": "success"}, "value": 1.0}]


def test_a_link_is_never_followed_and_its_target_never_written(tmp_path: Path, captured_logs: list[MutableMapping[str, Any]]) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_text('{"format": 1, "counters": {"bluegreen_cutovers": [{"labels": {"app": "a", "result": "success"}, "value": 40}]}}')
    (tmp_path / COUNTERS_FILE).symlink_to(target)
    m = Metrics()
    carry_over(m, tmp_path)
    assert counted(m, f"{CUTOVERS}_total", app="a", result="success") is None  # the link's content was not read
    assert "value\": 40" in target.read_text() and not (tmp_path / COUNTERS_FILE).is_symlink()
    assert any(e["event"] == "counters.corrupt" for e in captured_logs)


def test_series_with_other_label_names_are_dropped_the_rest_kept(tmp_path: Path, captured_logs: list[MutableMapping[str, Any]]) -> None:
    (tmp_path / COUNTERS_FILE).write_text(json.dumps({"format": 1, "counters": {
        "bluegreen_cutovers": [{"labels": {"app": "a", "colour": "x"}, "value": 7}, {"labels": {"app": "a", "result": "failed"}, "value": 2}],
        "bluegreen_retired_metric": [{"labels": {}, "value": 3}],
    }}))
    m = Metrics()
    carry_over(m, tmp_path)
    assert counted(m, f"{CUTOVERS}_total", app="a", result="failed") == 2
    assert [e["event"] for e in captured_logs] == ["counters.skipped"]
    assert "bluegreen_retired_metric" not in (tmp_path / COUNTERS_FILE).read_text()


def test_textfile_counters_grow_across_three_cron_runs(
    docker_client: Any, test_images: dict[str, str], app_name: str, nginx: NginxInstance, tmp_path: Path, session_id: str
) -> None:
    w = World(docker_client, app_name, nginx, tmp_path, session_id, healthCheck={"stableSeconds": 0})
    textfile = tmp_path / "textfile" / "bluegreen.prom"
    seen = []
    for spec in ({}, {"image": "bgtest:v2", "activeColor": "green"}, {}):  # deploy, cutover, nothing to do
        w.set(**spec)
        w.once("--metrics-textfile", str(textfile))
        text = textfile.read_text()
        seen.append((
            sample(text, f"{RECONCILE_RUNS}_total", app=app_name, result="converged"),
            sample(text, f"{CUTOVERS}_total", app=app_name, result="success"),
        ))
    assert seen == [(1, 1), (2, 2), (3, 2)]


def test_cli_run_with_a_corrupt_counter_file_warns_and_starts_from_zero(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "x.yaml").write_text("{{{")  # no valid spec: no Docker needed, still a run for monitoring
    state, textfile = tmp_path / "state", tmp_path / "bluegreen.prom"
    state.mkdir(mode=0o755)
    (state / COUNTERS_FILE).write_text('{"format": 1, "counters": {"bluegreen_reconcile_runs": "garbage"}}')
    warnings = []
    for expect in (1, 2):
        r = run_reconcile(specs, state, "--once", "--metrics-textfile", str(textfile))
        assert r.returncode == 2, r.explain()
        assert sample(textfile.read_text(), f"{RECONCILE_RUNS}_total", app="x", result="invalid") == expect
        warnings.append([line["problem"] for line in r.logs() if line.get("event") == "counters.corrupt"])
    assert warnings == [["counters.[]: Input should be a valid array"], []]  # the second run read back the first's
    stored = json.loads((state / COUNTERS_FILE).read_text())
    assert stored["counters"][RECONCILE_RUNS] == [{"labels": {"app": "x", "result": "invalid"}, "value": 2.0}]
