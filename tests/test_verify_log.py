"""Post-switch verification, unit level on real files: the access-log reader (rotation both ways, a partial
last line, foreign lines), the line parser and the verdict, the window record's round trip, and the planner's
switch-back and standby rules (controller/world/verification.py, controller/drivers/accesslog.py, controller/app/rules/switchback.py)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from controller.drivers.accesslog import end, read_since
from controller.kernel.document import Corrupt
from controller.spec.app import BlueGreenApp, VerifySpec
from controller.store.state import StateStore
from controller.world.actions import StopContainer, SwitchRoute
from controller.world.facts import Failure, Memory
from controller.world.fake import FakeImage
from controller.world.verification import (
    FAILED_REASON,
    WINDOW,
    Counts,
    LogPos,
    Window,
    judge,
    parse_line,
    tally,
    window_closed,
)
from tests.factories import make_app
from tests.fakes import CheckedWorld, SickAfterSwitch, reconciler, switched_back, world_for
from tests.support.plans import decide_on, inputs_for

GREEN = "127.0.0.1:18082"
BLUE = "127.0.0.1:18081"
SPEC = VerifySpec(windowSeconds=4, maxErrorRate=0.1, minRequests=4, maxLatencyP99Ms=500, healthFailures=2)


def line(t: float, addr: str, status: str, rt: str = "0.010") -> bytes:
    """A line as the shipped log_format writes it (every field a JSON string)."""
    return json.dumps(
        {"time": "x", "msec": f"{t:.3f}", "status": "200", "upstream_addr": addr, "upstream_status": status, "upstream_response_time": rt}
    ).encode()


def append(path: Path, *lines: bytes, partial: bytes = b"") -> None:
    with path.open("ab") as f:
        f.write(b"".join(x + b"\n" for x in lines) + partial)


# ------------------------------------------------------------------------------------------- the reader


def test_reads_whole_lines_from_the_noted_offset_and_keeps_a_partial_one(tmp_path: Path) -> None:
    log = tmp_path / "access.jsonl"
    append(log, line(1, BLUE, "200"))
    pos = end(log)  # the switch: what was logged before is not the new color's
    append(log, line(2, GREEN, "500"), partial=b'{"msec":"3.0","upstream_addr":"127.0.0.1:18')
    r = read_since(log, pos)
    assert [json.loads(x)["upstream_status"] for x in r.lines] == ["500"]
    # The partial line is not consumed: completed, it is read whole by the next read.
    with log.open("ab") as f:
        f.write(b'082","upstream_status":"502","upstream_response_time":"0.1"}\n')
    r2 = read_since(log, r.pos)
    assert [json.loads(x)["upstream_status"] for x in r2.lines] == ["502"]
    assert read_since(log, r2.pos).lines == []


def test_rename_rotation_reads_the_rest_of_the_old_file_then_the_new_one(tmp_path: Path) -> None:
    log = tmp_path / "access.jsonl"
    append(log, line(1, GREEN, "200"))
    pos = read_since(log, end(log)).pos
    append(log, line(2, GREEN, "500"))  # written after the last read, before the rotation
    os.rename(log, tmp_path / "access.jsonl.1")  # logrotate `create`
    append(log, line(3, GREEN, "503"))
    r = read_since(log, pos)
    assert [json.loads(x)["upstream_status"] for x in r.lines] == ["500", "503"]
    assert r.pos == LogPos(log.stat().st_ino, log.stat().st_size)


def test_copytruncate_reads_the_copy_past_the_offset_then_the_log_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "access.jsonl"
    append(log, line(1, GREEN, "200"), line(1.5, GREEN, "200"))
    pos = end(log)
    append(log, line(2, GREEN, "500"))
    (tmp_path / "access.jsonl.1").write_bytes(log.read_bytes())  # logrotate `copytruncate`: copy, then truncate
    with log.open("r+b") as f:
        f.truncate(0)
    append(log, line(3, GREEN, "504"))
    r = read_since(log, pos)
    assert [json.loads(x)["upstream_status"] for x in r.lines] == ["500", "504"]


def test_truncated_without_a_copy_reads_from_the_start(tmp_path: Path) -> None:
    log = tmp_path / "access.jsonl"
    append(log, line(1, GREEN, "200"), line(2, GREEN, "200"))
    pos = end(log)
    log.write_bytes(line(3, GREEN, "500") + b"\n")
    assert [json.loads(x)["upstream_status"] for x in read_since(log, pos).lines] == ["500"]


def test_missing_log_link_and_fifo_read_nothing(tmp_path: Path) -> None:
    log = tmp_path / "access.jsonl"
    assert end(log) == LogPos(0, 0)
    assert read_since(log, LogPos(0, 0)).lines == []
    secret = tmp_path / "secret"
    secret.write_bytes(line(1, GREEN, "500") + b"\n")
    log.symlink_to(secret)  # a link at the log is never followed
    r = read_since(log, LogPos(0, 0))
    assert r.lines == [] and r.note
    log.unlink()
    os.mkfifo(log)  # never blocks
    assert read_since(log, LogPos(0, 0)).lines == []


# ------------------------------------------------------------------------------------------- lines and verdict


def test_foreign_lines_are_skipped_and_only_the_colors_requests_count() -> None:
    lines = [
        b"127.0.0.1 - - [28/Nov/2026] \"GET / HTTP/1.1\" 500 0",  # combined format
        b'["a list"]',
        b'{"msec": "2.0"}',
        b'{"msec": "nan", "upstream_addr": "127.0.0.1:18082", "upstream_status": "500", "upstream_response_time": "0.1"}',
        b"{" * 100_000,  # too long / too deep
        line(0.5, GREEN, "500"),  # any time: Nginx's clock is not compared with ours
        line(2, BLUE, "500"),  # the other color
        line(2, "10.0.0.1:18082", "500"),  # another host's upstream with the same port
        line(2, GREEN, "200", "0.800"),  # slow
        line(2, GREEN, "502"),
        line(2, f"{BLUE}, {GREEN}", "502, 200"),  # a retry: the green try answered
        line(2, GREEN, "-", "-"),  # nginx gave up on it
    ]
    c = tally(lines, GREEN, spec=SPEC)
    assert (c.requests, c.errors, c.slow) == (5, 3, 1)
    assert c.skipped == 7
    assert parse_line(b"") is None


def test_judge_fails_on_rate_latency_and_health_and_passes_at_the_deadline() -> None:
    assert judge(SPEC, Counts(requests=3, errors=3), elapsed=1, length=4).state == "open"  # below minRequests
    v = judge(SPEC, Counts(requests=10, errors=2), elapsed=1, length=4)
    assert v.state == "failed" and "2 of 10 requests 5xx" in v.figures
    assert judge(SPEC, Counts(requests=100, errors=10), elapsed=1, length=4).state == "open"  # 0.10 is not above 0.1
    assert judge(SPEC, Counts(requests=100, slow=2), elapsed=1, length=4).state == "failed"
    assert judge(SPEC, Counts(health_failures=2), elapsed=1, length=4).state == "failed"
    v = judge(SPEC, Counts(requests=3), elapsed=4, length=4)
    assert v.state == "passed" and "not judged" in v.figures


def test_window_round_trips_and_a_hand_edited_one_is_corrupt() -> None:
    w = Window("green", "r2", "blue", "r1", "g", 10.0, 14.0, LogPos(5, 99), Counts(1, 2, 3, 4, 5, 6), "failed", "figs", 2)
    assert WINDOW.parse(WINDOW.text(w)) == w
    bad = WINDOW.dump(w) | {"state": "maybe"}
    with pytest.raises(Corrupt, match=r"^state: "):
        WINDOW.parse(json.dumps(bad))
    assert window_closed(None) and window_closed(w) and not window_closed(replace(w, state="open"))


# ------------------------------------------------------------------------------------------- planner rules


def _deployed(tmp_path: Path, **spec: Any) -> tuple[BlueGreenApp, CheckedWorld]:
    """blue v1 then green v2 converged (no window), and green's spec with `verify` (and `spec`) on top."""
    w = world_for(make_app())
    reconciler(w, tmp_path / "s").reconcile(make_app())
    reconciler(w, tmp_path / "s").reconcile(make_app(image="dialogue:2", activeColor="green"))
    return make_app(image="dialogue:2", activeColor="green", verify={"windowSeconds": 3}, **spec), w


def test_a_revision_that_failed_verification_gets_no_traffic_until_its_backoff_allows(tmp_path: Path) -> None:
    app, w = _deployed(tmp_path)
    obs = inputs_for(app, w).observed
    assert obs.route.color == "green"
    rev = app.revision("green")
    blue = obs.containers["blue"]
    assert blue is not None and blue.revision is not None
    window = Window("green", rev, "blue", blue.revision, app.generation(), 0.0, 3.0, state="failed", figures="9 of 10 requests 5xx")
    failed = Failure(rev, "green", 1, w.now(), FAILED_REASON, "9 of 10 requests 5xx")
    mem = Memory(failures={rev: failed}, verify=window)
    p = decide_on(app, obs, mem, now=w.now())
    assert any(isinstance(a, SwitchRoute) and a.color == "blue" for a in p.actions), p.actions
    assert p.blockers[0].reason == FAILED_REASON
    assert "spec wants green, Nginx serves blue because verification of revision" in p.blockers[0].message
    # The previous color runs another revision now: no way back, traffic stays where it is.
    moved = replace(window, from_revision="something-else")
    p2 = decide_on(app, obs, replace(mem, verify=moved), now=w.now())
    assert not any(isinstance(a, SwitchRoute) for a in p2.actions) and "not available" in p2.blockers[0].message
    # Backoff over: a retry (traffic stays on green, nothing blocks).
    p3 = decide_on(app, obs, mem, now=w.now() + 61)
    assert not p3.blockers and not any(isinstance(a, SwitchRoute) for a in p3.actions)


def test_standby_stop_waits_for_the_window(tmp_path: Path) -> None:
    app, w = _deployed(tmp_path, standby="stop")
    obs = inputs_for(app, w).observed
    window = Window("green", app.revision("green"), "blue", None, app.generation(), 0.0, 3.0)
    assert not any(isinstance(a, StopContainer) for a in decide_on(app, obs, Memory(verify=window), now=w.now()).actions)
    closed = replace(window, state="passed")
    assert any(isinstance(a, StopContainer) for a in decide_on(app, obs, Memory(verify=closed), now=w.now()).actions)


def test_store_keeps_the_window_beside_the_memory(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    w = Window("green", "r2", "blue", "r1", "g", 10.0, 14.0)
    store.save_window("a", w)
    assert store.load_memory("a").verify == w
    (tmp_path / "apps" / "a" / "verify.json").write_text("[]")
    assert store.load_window("a") is None  # corrupt: treated as absent


# ------------------------------------------------------------------------------------------- the reconciler, in memory


def test_reconciler_switches_back_remembers_and_retries_only_after_a_growing_backoff(tmp_path: Path) -> None:
    w, rec, v2, r = switched_back(tmp_path / "s")
    assert r.result == "degraded" and w.routed("dialogue") == ["127.0.0.1:18081"] and w.violations == []
    assert r.plan is not None and r.plan.blockers[0].reason == FAILED_REASON
    store = StateStore(tmp_path / "s")
    mem = store.load_memory("dialogue")
    rev = v2.revision("green")
    assert mem.failures[rev].reason == FAILED_REASON and mem.failures[rev].count == 1
    assert mem.verify is not None and mem.verify.state == "failed" and "access log" in mem.verify.figures
    assert rec.metrics.registry.get_sample_value("bluegreen_verifications_total", {"app": "dialogue", "result": "failed"}) == 1
    # Held off: nothing moves while the backoff runs.
    assert rec.reconcile(v2).result == "degraded" and w.routed("dialogue") == ["127.0.0.1:18081"]
    assert rec.metrics.registry.get_sample_value("bluegreen_verifications_total", {"app": "dialogue", "result": "failed"}) == 1
    # Backoff over: a full deploy with its own window, which fails again; the next backoff is longer.
    w.clock += 61
    assert rec.reconcile(v2).result == "degraded" and w.routed("dialogue") == ["127.0.0.1:18081"] and w.violations == []
    mem = store.load_memory("dialogue")
    assert mem.failures[rev].count == 2
    assert rec.metrics.registry.get_sample_value("bluegreen_verifications_total", {"app": "dialogue", "result": "failed"}) == 2


@dataclass
class ErrorsAfterSwitch(CheckedWorld):
    """Nginx proxies a request to each server it routes to per tick of the clock and logs it (through the World's
    access log, as the verifier reads it): green answers 502, blue 200. Health stays UP throughout."""

    log: Path = Path("/var/log/nginx/bluegreen.access.log")

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        for server in self.routed("dialogue"):
            self.log_access(self.log, line(self.clock, server, "502" if server == GREEN else "200"))


def test_traffic_the_world_logs_fails_the_window_and_switches_back(tmp_path: Path) -> None:
    base = world_for(make_app())
    log = tmp_path / "access.log"  # never on disk: the in-memory world's log
    w = ErrorsAfterSwitch(images=base.images, log=log)
    w.include_paths |= base.include_paths
    w.log_access(log, line(w.clock, BLUE, "500"))  # before the switch: not the new color's
    rec = reconciler(w, tmp_path / "s")
    events: list[dict[str, Any]] = []
    rec.notify = events.append
    assert rec.reconcile(make_app()).result == "converged"
    v2 = make_app(image="dialogue:2", activeColor="green", verify={"windowSeconds": 10, "minRequests": 4, "maxErrorRate": 0.1, "accessLog": str(log)})
    r = rec.reconcile(v2)
    assert r.result == "degraded" and w.routed("dialogue") == [BLUE] and w.violations == []
    mem = StateStore(tmp_path / "s").load_memory("dialogue")
    window = mem.verify
    assert window is not None and window.state == "failed" and window.figures.startswith("error rate above maxErrorRate")
    assert window.counts.requests >= 4 and window.counts.errors == window.counts.requests  # green's 502s only
    assert "access log:" not in window.figures and not log.exists()
    assert mem.failures[v2.revision("green")].reason == FAILED_REASON
    # The releases: green's ended switched back, with the figures; blue's revision took traffic again.
    rel = rec.store.load_releases("dialogue").releases
    assert [(x.number, x.color, x.began, x.ended) for x in rel] == [
        (1, "blue", "deploy", "replaced"), (2, "green", "deploy", "switched-back"), (3, "blue", "switch-back", "live")
    ]
    assert rel[1].detail == window.figures and rel[2].revision == rel[0].revision
    assert [e["event"] for e in events] == ["cutover", "cutover", "switch-back"] and events[2]["figures"] == window.figures


def test_a_preview_waits_for_the_window_the_switch_back_target_stays(tmp_path: Path) -> None:
    """Issue 19 #3: a preview in the spec never replaces the previous color (the switch-back target) while the
    window is open: the failing release is switched back from, and the preview takes the idle color only after."""
    base = world_for(make_app(), images={"dialogue:1": FakeImage(), "dialogue:2": FakeImage(), "dialogue:3": FakeImage()})
    w = SickAfterSwitch(images=base.images)
    w.include_paths |= base.include_paths
    rec = reconciler(w, tmp_path / "s")
    assert rec.reconcile(make_app()).result == "converged"
    blue = w.containers["dialogue-blue"].fact
    verify = {"windowSeconds": 10, "healthFailures": 2, "accessLog": str(tmp_path / "none.log")}
    v2 = make_app(image="dialogue:2", activeColor="green", verify=verify, preview={"image": "dialogue:3"})
    r = rec.reconcile(v2)
    assert r.plan is not None and r.plan.blockers[0].reason == FAILED_REASON, r.plan
    assert "not available" not in r.plan.blockers[0].message
    assert w.routed("dialogue") == ["127.0.0.1:18081"] and w.violations == []
    assert w.containers["dialogue-blue"].fact == blue  # never replaced nor stopped: it serves again
    assert r.plan.preview is not None and r.plan.preview.reason == "WaitingForLive"


@dataclass
class SickAfterSwitchBlueRestarted(SickAfterSwitch):
    """As SickAfterSwitch, and Docker restarts blue's app (the way back) the moment green falls sick."""

    restarted_at: float | None = None

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        green = self.containers.get("dialogue-green")
        if self.restarted_at is None and green is not None and green.broken:
            self.docker_restarted("dialogue-blue")
            self.restarted_at = self.clock


def test_switch_back_onto_a_color_docker_restarted_waits_a_full_window_first(tmp_path: Path) -> None:
    """Issue 19 #2: rule 1 holds for the switch back too: a previous color Docker restarted less than stableSeconds
    ago passes its check, yet gets traffic only after a full stability window."""
    base = world_for(make_app())
    w = SickAfterSwitchBlueRestarted(images=base.images, stable_seconds=2.0)
    w.include_paths |= base.include_paths
    rec = reconciler(w, tmp_path / "s")
    assert rec.reconcile(make_app()).result == "converged"
    v2 = make_app(image="dialogue:2", activeColor="green", verify={"windowSeconds": 10, "healthFailures": 2, "accessLog": str(tmp_path / "none.log")})
    r = rec.reconcile(v2)
    assert w.restarted_at is not None and w.containers["dialogue-blue"].restart_count == 1
    assert r.result == "degraded" and w.routed("dialogue") == ["127.0.0.1:18081"] and w.violations == []
    history = [json.loads(line) for line in (tmp_path / "s" / "history.jsonl").read_text().splitlines()]
    back = [(h["action"], h["color"], h["outcome"]) for h in history if h["color"] == "blue"][-3:]
    assert back == [("WaitHealthy", "blue", "ok"), ("SwitchRoute", "blue", "ok"), ("WriteMarker", "blue", "ok")], back
