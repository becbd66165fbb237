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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from annotated_types import Interval, MaxLen

from controller.kernel import files
from controller.kernel.document import Corrupt, Document, Stored
from controller.kernel.errors import ControllerError
from controller.kernel.logs import get_logger
from controller.store.metrics import Metrics

if TYPE_CHECKING:
    from prometheus_client import Counter

COUNTERS_FILE = "counters.json"
FORMAT: Literal[1] = 1
MAX_SERIES = 10_000  # a few per app and label value: far more than any host has
MAX_LABEL = 256  # app names are at most 50 characters; label values are ours
MAX_VALUE = float(2**53)


def counters_of(metrics: Metrics) -> dict[str, Counter]:
    """Every counter of `metrics`, by family name (`bluegreen_cutovers`, without `_total`)."""
    from prometheus_client import Counter  # only a run that exports metrics comes here

    out: dict[str, Counter] = {}
    for value in vars(metrics).values():
        if isinstance(value, Counter):
            for family in value.describe():
                out[family.name] = value
    return out


Label = Annotated[str, MaxLen(MAX_LABEL)]


@dataclass(frozen=True)
class Series(Stored):
    labels: dict[Label, Label]  # label name -> value ({} for a counter without labels)
    value: Annotated[float, Interval(ge=0, le=MAX_VALUE)]


@dataclass(frozen=True)
class CountersFile(Stored):
    """counters.json: {family: [series, ...]} of every counter (family without `_total`)."""

    format: Literal[1]
    counters: dict[str, list[Series]]


COUNTERS = Document(CountersFile)


def snapshot(metrics: Metrics) -> CountersFile:
    """Every counter series of `metrics`, with its total."""
    out: dict[str, list[Series]] = {}
    for name, counter in sorted(counters_of(metrics).items()):
        series = [
            Series(dict(s.labels), s.value)
            for family in counter.collect()
            for s in family.samples
            if s.name == f"{name}_total"
        ]
        if series:
            out[name] = sorted(series, key=lambda e: sorted(e.labels.items()))
    return CountersFile(FORMAT, out)


def parse(text: str) -> CountersFile:
    """The counters in a counters.json, checked as a whole; Corrupt names the first problem (never the content)."""
    stored = COUNTERS.parse(text)
    if sum(len(rows) for rows in stored.counters.values()) > MAX_SERIES:
        raise Corrupt(f"more than {MAX_SERIES} series")
    return stored


def carry_over(metrics: Metrics, state_dir: Path) -> None:
    """Add the totals stored in the state dir to `metrics`' counters and store the sums.

    Call with the state dir's lock held. Never raises: a file that cannot be read back means starting
    from 0 (with a warning), one that cannot be written is logged (the textfile is still written).
    """
    log = get_logger()
    path = state_dir / COUNTERS_FILE
    stored: dict[str, list[Series]] = {}
    try:
        text = files.read_text(path, files.STATE)
        if isinstance(text, files.Garbage):
            raise Corrupt(f"garbage ({text.what})")
        stored = parse(text).counters if text is not None else {}
    except (Corrupt, ControllerError) as e:
        log.warning("counters.corrupt", path=str(path), problem=str(e), action="counters start from 0")
        stored = {}
    known = counters_of(metrics)
    for name, rows in stored.items():
        counter = known.get(name)
        if counter is None:
            continue  # a counter this version does not export
        for row in rows:
            try:
                (counter.labels(**row.labels) if row.labels else counter).inc(row.value)
            except ValueError:  # label names of another version: that series starts again
                log.warning("counters.skipped", path=str(path), counter=name, problem="label names differ")
    try:
        files.write_atomic(path, json.dumps(COUNTERS.dump(snapshot(metrics)), sort_keys=True) + "\n", 0o644)
    except ControllerError as e:
        log.error("counters.unsaved", path=str(path), error=str(e))
