"""Secret redaction in log lines and in the state files (issue 10 item 13; rule in docs/secrets.md).

- status.json, memory.json and history.jsonl go through the redactor like log lines, and stay valid JSON.
- Label fields (app, color, event, reconcile id, ...) are never masked, so a secret equal to `green` or to
  the app name does not blank the labels Loki, the alerts and `--history` select on.
- A secret of 8+ characters is masked inside words too; a shorter one wherever it is a whole word (it was
  not masked at all below 4 characters).
- A multi-line secret is masked whole and line by line (a line of 16+ characters), its base64 forms too; output
  is redacted as one text before any cut (a line cut to 500 characters, the 64 KiB cap): no fragment of 16+
  characters survives (on real Docker: tests/test_gates_real.py).
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from controller.app.steps.gates import LINE_CAP, shown_output
from controller.drivers.gates import _Tail
from controller.kernel import logs
from controller.kernel.logs import MASK, redact_json_text, redact_secrets, redact_text, register_secret
from controller.store.documents import LastDeploy
from controller.store.state import HistoryEntry, Ledger, StateStore
from controller.world.facts import Failure, Memory
from controller.world.protocol import OUTPUT_CAP
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


PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\nMzEfYyjiWA4R==\n-----END PRIVATE KEY-----"


def test_a_multi_line_secret_is_masked_whole_and_line_by_line() -> None:
    register_secret(PEM)
    assert redact_text(f"key={PEM}\nnext") == f"key={MASK}\nnext"
    indented = "\n".join("  " + ln for ln in PEM.splitlines())
    assert redact_text(indented) == "\n".join(f"  {MASK}" if len(ln) >= 16 else "  " + ln for ln in PEM.splitlines())
    assert redact_text(json.dumps({"k": PEM})) == json.dumps({"k": MASK})  # printed as JSON by the hook itself


def test_base64_forms_of_a_secret_are_masked() -> None:
    secret = "s3cr3t-" + "x" * 100 + "+/?"
    register_secret(secret)
    raw = secret.encode()
    for text in (base64.b64encode(raw).decode(), base64.b64encode(raw + b"\n").decode(), base64.urlsafe_b64encode(raw).decode()):
        assert len(redact_text(text)) < 16 + len(MASK), text  # at most the tail that depends on what follows
    wrapped = base64.encodebytes(raw + b"\n").decode()  # 76-column lines, as `echo "$S" | base64` prints
    assert all(len(ln) < 16 or ln == MASK for ln in redact_text(wrapped).splitlines())


def test_output_is_redacted_before_a_line_is_cut() -> None:
    jwt = "eyJ" + "a" * 797
    register_secret(jwt)
    out = shown_output((f"API_JWT={jwt}", "", "y" * 900))
    assert out == (f"API_JWT={MASK}", "y" * LINE_CAP)


def test_the_line_the_output_cap_cut_inside_is_dropped_whole() -> None:
    tail = _Tail()
    tail.add(b"jwt=" + b"a" * 800 + b"\n")
    tail.add(b"z" * (OUTPUT_CAP - 100) + b"\n")
    assert tail.lines() == ("z" * (OUTPUT_CAP - 100),)
    exact = _Tail()  # a cut on a line boundary loses no line
    exact.add(b"a" * 9 + b"\n" + b"b" * (OUTPUT_CAP - 1) + b"\n")
    assert exact.lines() == ("b" * (OUTPUT_CAP - 1),)
