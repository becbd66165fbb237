"""Counters that survive cron: `reconcile --once --metrics-textfile` continues them from the state dir.

Each cron run starts a fresh `Metrics()`. Without this, every counter in the textfile would restart at 0
on every run and `increase()` would mean something else for cron than for `--watch`. With it, a run adds
the totals stored in `<state-dir>/counters.json` to its own counts and stores the sums, under the state
dir's lock (so two runs never lose each other's counts), then writes the textfile: the series grow across
runs exactly as a long-running process's do.

The file is the controller's own cache, read like every state file (regular file only, no link followed,
bounded size) and checked as a whole: when it cannot be read back (torn, hand-edited, hostile, another
version's), the counters start from 0 with one warning and the file is rewritten. Prometheus sees that
as a counter reset, which `increase()` and `rate()` handle. Counters of names this version does not
export are dropped; the reconcile-duration histogram is not carried (it is per run in the textfile).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.drivers import files
from controller.errors import ControllerError
from controller.jsonshape import Corrupt
from controller.logs import get_logger
from controller.metrics import Metrics

if TYPE_CHECKING:
    from prometheus_client import Counter

COUNTERS_FILE = "counters.json"
FORMAT = 1
MAX_SERIES = 10_000  # a few per app and label value: far more than any host has
MAX_LABEL = 256  # app names are at most 50 characters; label values are ours
MAX_VALUE = float(2**53)


def counters_of(metrics: Metrics) -> dict[str, Counter]:
    """Every counter of `metrics`, by family name (`bluegreen_cutovers`, without `_total`)."""
    from prometheus_client import Counter

    out: dict[str, Counter] = {}
    for value in vars(metrics).values():
        if isinstance(value, Counter):
            for family in value.describe():
                out[family.name] = value
    return out


def snapshot(metrics: Metrics) -> dict[str, list[dict[str, Any]]]:
    """{family: [{"labels": {...}, "value": total}, ...]} for every counter series of `metrics`."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name, counter in sorted(counters_of(metrics).items()):
        series = [
            {"labels": dict(s.labels), "value": s.value}
            for family in counter.collect()
            for s in family.samples
            if s.name == f"{name}_total"
        ]
        if series:
            out[name] = sorted(series, key=lambda e: sorted(e["labels"].items()))
    return out


def parse(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The counters in a counters.json, checked as a whole; Corrupt names the first problem (never the content)."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise Corrupt("not JSON") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("counters"), dict):
        raise Corrupt(f"not a counters file of format {FORMAT}")
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    count = 0
    for name, series in data["counters"].items():
        if not isinstance(series, list):
            raise Corrupt(f"counters.{name[:60]}: not a list")
        rows: list[tuple[dict[str, str], float]] = []
        for i, entry in enumerate(series):
            where = f"counters.{name[:60]}[{i}]"
            count += 1
            if count > MAX_SERIES:
                raise Corrupt(f"more than {MAX_SERIES} series")
            if not isinstance(entry, dict) or not isinstance(entry.get("labels"), dict):
                raise Corrupt(f"{where}: not an object with labels")
            labels = entry["labels"]
            if not all(isinstance(k, str) and isinstance(v, str) and len(k) <= MAX_LABEL and len(v) <= MAX_LABEL for k, v in labels.items()):
                raise Corrupt(f"{where}.labels: not short strings")
            value = entry.get("value")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= MAX_VALUE:
                raise Corrupt(f"{where}.value: not a count")
            rows.append((labels, float(value)))
        out[name] = rows
    return out


def carry_over(metrics: Metrics, state_dir: Path) -> None:
    """Add the totals stored in the state dir to `metrics`' counters and store the sums.

    Call with the state dir's lock held. Never raises: a file that cannot be read back means starting
    from 0 (with a warning), one that cannot be written is logged (the textfile is still written).
    """
    log = get_logger()
    path = state_dir / COUNTERS_FILE
    stored: dict[str, list[tuple[dict[str, str], float]]] = {}
    try:
        text = files.read_text(path, files.STATE)
        if isinstance(text, files.Garbage):
            raise Corrupt(f"garbage ({text.what})")
        stored = parse(text) if text is not None else {}
    except (Corrupt, ControllerError) as e:
        log.warning("counters.corrupt", path=str(path), problem=str(e), action="counters start from 0")
        stored = {}
    known = counters_of(metrics)
    for name, rows in stored.items():
        counter = known.get(name)
        if counter is None:
            continue  # a counter this version does not export
        for labels, value in rows:
            try:
                (counter.labels(**labels) if labels else counter).inc(value)
            except ValueError:  # label names of another version: that series starts again
                log.warning("counters.skipped", path=str(path), counter=name, problem="label names differ")
    try:
        files.write_atomic(path, json.dumps({"format": FORMAT, "counters": snapshot(metrics)}, sort_keys=True) + "\n", 0o644)
    except ControllerError as e:
        log.error("counters.unsaved", path=str(path), error=str(e))
