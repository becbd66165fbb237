"""Secret redaction in log lines and in the state files (issue 10 item 13; rule in docs/secrets.md).

- status.json, memory.json and history.jsonl go through the redactor like log lines, and stay valid JSON.
- Label fields (app, color, event, reconcile id, ...) are never masked, so a secret equal to `green` or to
  the app name does not blank the labels Loki, the alerts and `--history` select on.
- A secret of 8+ characters is masked inside words too; a shorter one wherever it is a whole word (it was
  not masked at all below 4 characters).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from controller import logs
from controller.facts import Failure, Memory
from controller.logs import MASK, redact_json_text, redact_secrets, register_secret
from controller.state import HistoryEntry, Ledger, StateStore
from controller.status import LastDeploy
from tests.factories import make_app
from tests.fakes import reconciler, world_for

LONG = "hunter2-correct-horse"


@pytest.fixture(autouse=True)
def fresh_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    # The registry is process-wide: give each test its own, and leave none behind for other tests.
    monkeypatch.setattr(logs, "_secrets", set())


def test_labels_survive_a_secret_equal_to_them_and_text_does_not(fresh_secrets: None) -> None:
    for s in ("green", "dialogue", LONG, "ab1"):
        register_secret(s)
    with capture_logs(processors=[redact_secrets]) as cap:
        log = structlog.get_logger("bluegreen").bind(app="dialogue", color="green", image="dialogue:1", reconcile_id="r1")
        log.info("action.done", action="SwitchRoute", message=f"now green; token {LONG}X; pin=ab1,", detail="evergreen dialogues")
        log.error("action.failed", error=RuntimeError(f"denied: {LONG}"), extra={"color": "green", "args": ["ab1", "green"]})
    done, failed = cap
    assert (done["app"], done["color"], done["image"], done["reconcile_id"], done["event"], done["action"]) == (
        "dialogue", "green", "dialogue:1", "r1", "action.done", "SwitchRoute",
    )  # fmt: skip
    assert done["message"] == f"now {MASK}; token {MASK}X; pin={MASK},"
    # `green` (short) only as a whole word; `dialogue` (8 characters) inside words too.
    assert done["detail"] == f"evergreen {MASK}s"
    assert failed["error"] == f"denied: {MASK}"
    assert failed["extra"] == {"color": "green", "args": [MASK, MASK]}


def test_state_files_are_redacted_and_stay_valid_json(tmp_path: Path) -> None:
    register_secret(LONG)
    register_secret("green")
    store = StateStore(tmp_path)
    status = {
        "app": "dialogue",
        "conditions": [{"type": "Degraded", "reason": "PullFailed", "message": f'pull: "{LONG}" rejected', "lastTransitionTime": "t"}],
        "observed": {"serving": "green", "route": {"color": "green", "detail": "green light\n"}},
    }
    store.save_accessory_status("dialogue", status)  # the writer app status.json goes through too, fed a partial one
    failure = Failure(revision="r1", color="green", count=1, last_failed_at=1.0, reason="HealthTimeout", message=f"env {LONG}")
    last = LastDeploy(at="t", reconcile_id="x", from_color=None, color="green", image="i", revision="r1", outcome="failed", message=f"{LONG}\\")
    store.save_memory("dialogue", Memory(failures={"r1": failure}), last)
    Ledger(store).record(HistoryEntry("t", "dialogue", "x", "CreateContainer", "green", "i", "ok", f"tab\t{LONG}"))
    files = [tmp_path / "apps/dialogue/status.json", tmp_path / "apps/dialogue/memory.json", tmp_path / "history.jsonl"]
    for f in files:
        text = f.read_text()
        assert LONG not in text and MASK in text, f
        assert json.dumps(LONG)[1:-1] not in text
        for line in text.splitlines() if f.suffix == ".jsonl" else [text]:
            json.loads(line)  # still valid JSON
    saved = json.loads(files[0].read_text())  # (a partial status: read as JSON, not as a Status)
    assert saved["app"] == "dialogue" and saved["observed"]["serving"] == "green"
    assert saved["observed"]["route"] == {"color": "green", "detail": f"{MASK} light\n"}
    assert saved["conditions"][0]["message"] == f'pull: "{MASK}" rejected'
    mem = store.load_memory("dialogue")
    assert mem.failures["r1"].color == "green" and mem.failures["r1"].message == f"env {MASK}"
    assert store.load_last_deploy("dialogue") == replace(last, message=f"{MASK}\\")
    [h] = store.history("dialogue")  # the app label is what --history selects on
    assert h["message"] == f"tab\t{MASK}" and h["color"] == "green"


def test_a_reconcile_pass_with_the_app_name_as_secret_keeps_its_state_readable(tmp_path: Path) -> None:
    app = make_app()
    register_secret(app.name)  # a secret that happens to be the app's name
    w = world_for(app)
    assert reconciler(w, tmp_path).reconcile(app).converged
    status = json.loads((tmp_path / "apps" / app.name / "status.json").read_text())
    assert status["app"] == app.name
    history = StateStore(tmp_path).history(app.name)
    assert history and all(e["app"] == app.name for e in history)
    # ...while free text that names it is masked (the container name holds it).
    assert any(MASK in e.get("message", "") for e in history)


def test_redact_json_text_keeps_layout_and_non_json_text() -> None:
    register_secret(LONG)
    doc = json.dumps({"a": [1, 2.5, None, True], "b": f"x{LONG}", "c": "é"}, indent=2, sort_keys=True)
    out = redact_json_text(doc)
    assert out == doc.replace(f"x{LONG}", f"x{MASK}")
    assert redact_json_text(f"not json {LONG}") == f"not json {MASK}"
