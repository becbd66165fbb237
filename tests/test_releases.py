"""Releases (issue 21): the ledger's rules (pure), the reconciler recording them against the in-memory world,
the table of `reconcile releases`, and the notification bodies.

The real-dockerd side (three releases, rollback --to a deploy and a switch, a loopback webhook) is
tests/test_real_releases.py; the notification driver against real loopback receivers is tests/test_notify.py.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from controller.app.reconcile import Reconciler
from controller.store.metrics import Metrics
from controller.store.releases import (
    KEEP,
    RELEASES,
    Host,
    Origin,
    Releases,
    Taken,
    assess,
    begin,
    check_notify_url,
    classify,
    event,
    keep_reason,
    recent,
    render_table,
    table_json,
)
from controller.store.state import StateStore
from controller.world.fake import FakeImage
from tests.factories import make_app
from tests.fakes import world_for


def _taken(rev: str, image: str, color: Any = "blue", at: float = 0.0) -> Taken:
    return Taken(rev, image, color, at)


def _three() -> Releases:
    led = Releases()
    for i, color in enumerate(("blue", "green", "blue"), start=1):
        led = begin(led, _taken(f"r{i}", f"app:{i}", color, at=100.0 * i), "deploy", Origin(actor="alice"))
    return led


def test_begin_ends_the_live_release_and_numbers_never_repeat() -> None:
    led = _three()
    assert [(r.number, r.ended, r.ended_at) for r in led.releases] == [(1, "replaced", 200.0), (2, "replaced", 300.0), (3, "live", None)]
    assert led.live is led.releases[-1] and led.releases[0].served(1000.0) == 100.0 and led.live.served(1000.0) == 700.0
    assert begin(led, _taken("r3", "app:3", "blue", at=999.0), "deploy", Origin()) is led  # the same release re-confirmed
    back = begin(led, _taken("r2", "app:2", "green", 400.0), "switch-back", Origin(), detail="5xx 40% > 5%")
    assert (back.releases[-2].ended, back.releases[-2].detail) == ("switched-back", "5xx 40% > 5%")
    assert (back.live is not None and back.live.number, back.releases[-1].began) == (4, "switch-back")
    # Bounded: the newest KEEP, numbering continues.
    for i in range(KEEP + 5):
        led = begin(led, _taken(f"x{i}", f"app:x{i}", "green" if i % 2 else "blue", 500.0 + i), "deploy", Origin())
    assert len(led.releases) == KEEP and led.releases[-1].number == KEEP + 8 and led.releases[0].number == 9


def test_a_commit_is_recorded_rather_than_the_user_and_the_document_round_trips() -> None:
    led = begin(Releases(), _taken("r1", "app:1"), "deploy", Origin(commit="c" * 40, author="Ann <a@x>", signer="ci", actor="root"))
    r = led.releases[0]
    assert (r.commit, r.author, r.signer, r.actor) == ("c" * 40, "Ann <a@x>", "ci", None)
    text = RELEASES.text(led)
    assert RELEASES.parse(text) == led and "actor" not in json.loads(text)["releases"][0]  # nulls are left out


def test_classify_rollback_switch_back_failover_deploy() -> None:
    led = _three()
    assert classify(led, "r1", desired=True, failover=False) == "rollback"  # served before: going back
    assert classify(led, "r9", desired=True, failover=False) == "deploy"
    assert classify(led, "r2", desired=False, failover=False) == "switch-back"
    assert classify(led, "r2", desired=False, failover=True) == "failover"


def test_find_by_number_revision_or_image() -> None:
    led = _three()
    assert [led.find(x).number for x in ("1", "#2", "r3", "app:2")] == [1, 2, 3, 2]  # type: ignore[union-attr]
    assert led.find("nope") is None and led.find("7") is None
    digits = begin(led, _taken("1234", "app:9", "green", 400.0), "deploy", Origin())
    assert digits.find("1234") is digits.live  # no release has that number: a revision


def test_keep_reason() -> None:
    led = replace(_three(), seen={"sha256:new": 350.0, "sha256:old": 50.0})
    assert keep_reason(led, 2, "sha256:x", ["app:2"], 0.0) == "the image of release #2 (one of the 2 most recent)"
    assert keep_reason(led, 2, "sha256:old", ["app:1"], 0.0) is None  # #1 is not one of the 2 most recent
    assert keep_reason(led, 3, "sha256:old", ["app:1"], 0.0) is not None
    assert keep_reason(led, 2, "sha256:new", ["app:9"], 0.0) == "first seen 1970-01-01T00:05:50Z, after release #3 took traffic"
    assert keep_reason(led, 2, "sha256:old", ["app:9"], 301.0) == "created 1970-01-01T00:05:01Z, after release #3 took traffic"
    assert keep_reason(led, 2, "sha256:unseen", ["app:9"], 0.0) is not None  # not seen yet: seen now
    assert keep_reason(Releases(), 2, "sha256:old", ["app:9"], 0.0) == "no release recorded yet"
    # A rollback to #2 (its image again) does not push #1's image out of the 2 most recent.
    back = begin(led, _taken("r2", "app:2", "green", 400.0), "rollback", Origin())
    assert keep_reason(back, 2, "sha256:old", ["app:1"], 0.0) is None and keep_reason(back, 3, "sha256:old", ["app:1"], 0.0) is not None
    assert [r.number for r in recent(back, 3)] == [4, 3, 1]


def test_assess_marks_live_switch_deploy_and_why_not() -> None:
    led = _three()  # #3 live on blue; green (idle) runs r2
    host = Host(
        config_revision=lambda r: r.revision if r.number != 1 else "changed",
        idle_revision=lambda r: r.revision,
        obtainable=lambda image: None,
        warm_revision="r2",
        idle="green",
    )
    rows = assess(led, host)
    assert [(r.release.number, r.way) for r in rows] == [(3, "live"), (2, "switch"), (1, "no")]
    assert "configuration changed" in rows[2].why
    again = begin(led, _taken("r1", "app:1", "green", 400.0), "rollback", Origin())  # #4 runs #1's revision
    assert [(r.release.number, r.way) for r in assess(again, host)] == [(4, "live"), (3, "deploy"), (2, "switch"), (1, "live")]
    gone = assess(led, replace(host, config_revision=lambda r: r.revision, warm_revision=None,
                               obtainable=lambda image: f"image {image} is not present locally and cannot be pulled"))
    assert [(r.release.number, r.way) for r in gone] == [(3, "live"), (2, "no"), (1, "no")]
    out = render_table("app", rows, 1000.0)
    assert out.splitlines()[0] == "app: 3 releases (newest first)" and "LIVE" in out.splitlines()[2]
    doc = table_json("app", rows, 1000.0)
    assert [(r["number"], r["rollback"]["way"], r["servedSeconds"]) for r in doc["releases"]] == [(3, "live", 700.0), (2, "switch", 100.0), (1, "no", 100.0)]


def test_event_bodies_carry_a_text_line() -> None:
    led = _three()
    body = event("rollback", "app", 300.0, release=led.releases[-1], previous=led.releases[-2])
    assert body["text"] == "app: rolled back to #3 app:3 on blue (was #2 app:2) by alice"
    assert body["release"]["revision"] == "r3" and body["actor"]["user"] == "alice" and body["event"] == "rollback"
    failed = event("deploy-failed", "app", 1.0, image="app:4", message="health check failed", origin=Origin(commit="a" * 40, author="Ann"))
    assert failed["text"] == f"app: deploy of app:4 failed: health check failed by Ann (commit {'a' * 12})"
    assert event("source-refused", "", 1.0, message="main: SignatureRefused")["app"] is None


@pytest.mark.parametrize("url", ["https://hooks.slack.com/services/T/B/x", "http://127.0.0.1:9/h", "http://[::1]:80/", "http://localhost/x"])
def test_notify_urls_accepted(url: str) -> None:
    assert check_notify_url(url) == url


@pytest.mark.parametrize("url", ["http://example.com/h", "ftp://127.0.0.1/", "https://u:p@example.com/", "127.0.0.1:80", "http://10.0.0.1/"])
def test_notify_urls_refused(url: str) -> None:
    with pytest.raises(ValueError):
        check_notify_url(url)


# ------------------------------------------------------------------------------------ recorded by the reconciler


def test_the_reconciler_records_releases_and_notifies_each_in_order(tmp_path: Path) -> None:
    images = {f"dialogue:{i}": FakeImage() for i in (1, 2, 3)}
    app1 = make_app(image="dialogue:1")
    w = world_for(app1, images=images)
    events: list[dict[str, Any]] = []
    rec = Reconciler(w, StateStore(tmp_path), Metrics(), notify=events.append)
    for image, color in (("dialogue:1", "blue"), ("dialogue:2", "green"), ("dialogue:3", "blue"), ("dialogue:2", "green")):
        w.clock += 60
        assert rec.reconcile(make_app(image=image, activeColor=color)).result == "converged"
    led = rec.store.load_releases("dialogue")
    assert [(r.number, r.image, r.began, r.ended) for r in led.releases] == [
        (1, "dialogue:1", "deploy", "replaced"),
        (2, "dialogue:2", "deploy", "replaced"),
        (3, "dialogue:3", "deploy", "rolled-back"),
        (4, "dialogue:2", "rollback", "live"),
    ]
    assert all(r.actor and r.image_id for r in led.releases)  # the user; the image id (filled in by the next look)
    assert [e["event"] for e in events] == ["cutover", "cutover", "cutover", "rollback"]
    assert [e["release"]["number"] for e in events] == [1, 2, 3, 4]
    # The live release, for Grafana's annotations.
    text = rec.metrics.exposition().decode()
    assert 'bluegreen_release_start_timestamp_seconds{app="dialogue",began="rollback",image="dialogue:2",release="4"}' in text
    assert 'release="3"' not in text


def test_a_missing_or_corrupt_ledger_is_rebuilt_from_what_serves(tmp_path: Path, capsys: Any) -> None:
    app = make_app(image="dialogue:1")
    w = world_for(app)
    events: list[dict[str, Any]] = []
    rec = Reconciler(w, StateStore(tmp_path), Metrics(), notify=events.append)
    assert rec.reconcile(app).result == "converged"
    path = tmp_path / "apps" / "dialogue" / "releases.json"
    path.write_text('{"releases": [{"number": "one"}]}')
    w.mutations.clear()
    assert rec.reconcile(app).result == "converged" and w.mutations == []  # the world is not touched for it
    led = rec.store.load_releases("dialogue")
    assert [(r.number, r.began, r.ended) for r in led.releases] == [(1, "observed", "live")]
    assert [e["event"] for e in events] == ["cutover"]  # an observed release is no event
    assert capsys.readouterr().out.count("state.corrupt") == 1
