"""drivers/notify.py against real loopback receivers: every event in order, the body redacted, a receiver that
hangs, fails or redirects never holds up the caller, failures counted and logged once."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from controller.drivers.notify import Notifier
from controller.kernel.logs import register_secret
from tests.support.webhook import Receiver


@pytest.fixture
def receivers() -> Iterator[dict[str, Receiver]]:
    made = {m: Receiver(m) for m in ("ok", "fail", "hang", "redirect")}
    yield made
    for r in made.values():
        r.close()


class Failures:
    def __init__(self) -> None:
        self.n = 0
        self.reasons: list[str] = []
        self.cond = threading.Condition()

    def __call__(self, reason: str) -> None:
        with self.cond:
            self.n += 1
            self.reasons.append(reason)
            self.cond.notify_all()

    def wait_for(self, n: int, timeout: float = 30.0) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.n >= n, timeout), f"{self.n} failures, not {n}"


def test_every_event_in_order_redacted_and_bad_receivers_hold_up_nothing(receivers: dict[str, Receiver], capsys: Any) -> None:
    register_secret("s3cr3t-value-for-notify")
    failed = Failures()
    urls = [receivers[m].url for m in ("ok", "fail", "hang", "redirect")]
    n = Notifier(urls, failed, timeout=1.0, attempts=2)
    started = time.monotonic()
    for i in range(5):
        n({"event": "cutover", "app": "a", "seq": i, "message": "password s3cr3t-value-for-notify leaked", "text": f"#{i}"})
    queued_in = time.monotonic() - started
    assert queued_in < 0.5  # queueing waits on no receiver, not even the one that hangs

    got = receivers["ok"].wait_for(5)
    assert [b["seq"] for b in got] == [0, 1, 2, 3, 4]  # in order
    assert all("s3cr3t" not in json.dumps(b) and b["text"] == f"#{b['seq']}" for b in got)
    # 500 and redirect: retried (2 attempts each), never followed; the hanging one is cut at the timeout.
    receivers["fail"].wait_for(10)
    receivers["redirect"].wait_for(10)
    assert set(receivers["redirect"].paths) == {"/hooks/T0KEN"}  # /elsewhere never asked
    failed.wait_for(10)  # fail and redirect: 5 events each
    n.close(wait=0.5)  # the hanging one still has events queued: given up, counted
    failed.wait_for(11)
    assert failed.reasons[:10] == ["failed"] * 10 and "dropped" in failed.reasons[10:]
    logs = capsys.readouterr().out
    assert logs.count("notify.failed") == 3  # once per run and URL
    assert "T0KEN" not in logs  # the URL's path (a webhook's credential) is never logged
