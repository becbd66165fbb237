"""State dirs written before the documents were pydantic models (issue 18 item 6) load, and are written back unchanged.

tests/data/state_before_pydantic was written by main's code of the time (hand-written to_json, StateStore,
counters.carry_over, append_history): every document kind, with its optional parts present and absent.
Loading it must warn of nothing, and writing what was loaded must give the very same bytes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from controller.store.counters import COUNTERS_FILE, carry_over
from controller.store.metrics import Metrics
from controller.store.state import HISTORY, StateStore

BEFORE = Path(__file__).parent / "data" / "state_before_pydantic"
APPS = ("dialogue", "plain")


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    shutil.copytree(BEFORE, tmp_path / "state")
    return StateStore(tmp_path / "state")


def _text(store: StateStore, app: str, name: str) -> str:
    return (store.app_dir(app) / name).read_text()


def test_every_document_of_an_existing_state_dir_loads_without_a_warning(store: StateStore) -> None:
    with capture_logs() as logs:
        mem = store.load_memory("dialogue")
        assert [(f.revision, f.count, f.gates) for f in mem.failures.values()] == [("rev2", 3, ""), ("rev3", 1, "0123456789abcdef")]
        assert mem.converged_generation == "gen1"
        assert sorted(mem.hooks) == ["afterSwitch/rev2", "beforeSwitch/rev2"]
        assert mem.hooks["beforeSwitch/rev2"].output == ("migrated", "done") and mem.hooks["afterSwitch/rev2"].finished_at is None
        assert mem.verify is not None and mem.verify.state == "failed" and mem.verify.log.offset == 5678
        assert mem.verify.counts.health_failures == 0 and mem.verify.counts.requests == 100
        last = store.load_last_deploy("dialogue")
        assert last is not None and last.from_color == "blue" and last.reconcile_id == "0123456789ab"
        fo = store.load_failover("dialogue")
        assert fo.active is not None and fo.active.to_color == "blue" and fo.served == {"blue": "rev1", "green": "rev2"}
        status = store.load_status("dialogue")
        assert status is not None and status.hooks is not None and [h.phase for h in status.hooks] == ["afterSwitch", "beforeSwitch"]
        assert status.source is not None and status.source.invalid is not None and status.source.head == "b" * 40
        assert status.desired.resources is not None and status.desired.resources.cpus == 1.5
        assert not status.conditions[0].status and status.observed.containers["green"] is None
        for app in APPS:
            assert store.load_status(app) is not None
            store.load_memory(app)
            store.load_failover(app)
        assert store.load_memory("plain").failures == {} and store.load_last_deploy("plain") is None
    assert logs == []


@pytest.mark.parametrize("app", APPS)
def test_what_was_loaded_is_written_back_byte_for_byte(store: StateStore, app: str) -> None:
    before = {name: _text(store, app, name) for name in ("memory.json", "failover.json", "status.json")}
    status = store.load_status(app)
    assert status is not None
    store.save_status(app, status)
    store.save_memory(app, store.load_memory(app), None)  # the last deploy and the hooks on file are kept
    store.save_failover(app, store.load_failover(app))
    if app == "dialogue":
        before["verify.json"] = _text(store, app, "verify.json")
        window = store.load_window(app)
        assert window is not None
        store.save_window(app, window)
    assert {name: _text(store, app, name) for name in before} == before


def test_counters_and_history_lines_keep_their_format(store: StateStore) -> None:
    counters = store.root / COUNTERS_FILE
    before = counters.read_text()
    carry_over(Metrics(), store.root)  # a fresh run's counts (none) added to the totals on file
    assert counters.read_text() == before
    lines = (store.root / "history.jsonl").read_text().splitlines()
    assert len(lines) == 5
    for line in lines:
        entry = HISTORY.parse(line)
        assert json.dumps(HISTORY.dump(entry), sort_keys=True, separators=(",", ":")) == line
