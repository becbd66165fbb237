"""Release notifications (`--notify-url`, issue 21): POST each release event, one JSON object, to every URL.

Calling a `Notifier` only queues the event: one daemon thread per URL delivers, in order, so a switch is never
delayed or failed by a receiver, and a receiver that hangs holds up only its own URL. The queue is bounded
(`QUEUE_SIZE` events a URL; when full the event is dropped and counted). Each POST ends within `TIMEOUT` seconds
whatever the receiver does (probes.Deadline shuts its socket down), is tried `ATTEMPTS` times, never follows a
redirect (a 3xx is a failure: the body goes where the URL says or nowhere), reads no proxy or netrc from the
environment, and sends the body through the redactor (controller/logs.py), so a registered secret never leaves.
A failed delivery is counted (`on_failure`: bluegreen_notifications_failed_total{reason}) and logged once per run and
URL, showing the URL's scheme and host only (a Slack or Mattermost webhook URL is itself a credential).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from controller.drivers.probes import Deadline
from controller.kernel.logs import get_logger, redact_json_text

QUEUE_SIZE = 100
TIMEOUT = 5.0  # seconds one POST may take, connect to answer
ATTEMPTS = 3
RETRY_PAUSE = 0.5  # seconds before the second attempt, doubled for each further one


def shown(url: str) -> str:
    """The URL as logs may show it: scheme and host, never the path or query (the webhook's secret)."""
    u = urlsplit(url)
    return f"{u.scheme}://{u.hostname}{f':{u.port}' if u.port else ''}/..."


class _Delivery:
    """One URL: its queue and its thread."""

    def __init__(self, url: str, notifier: Notifier) -> None:
        self.url = url
        self.notifier = notifier
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=QUEUE_SIZE)
        self.thread = threading.Thread(target=self._run, name=f"notify {shown(url)}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        n = self.notifier
        client: httpx.Client | None = None  # made at the first event: its TLS set-up never runs beside a pass's start
        try:
            while True:
                body = self.queue.get()
                try:
                    if body is None:
                        return
                    if client is None:
                        client = httpx.Client(follow_redirects=False, trust_env=False, timeout=n.timeout,
                                              headers={"Content-Type": "application/json"})
                    problem = self._post(client, body)
                    if problem is not None:
                        n.failed(self.url, "failed", problem)
                finally:
                    self.queue.task_done()
        finally:
            if client is not None:
                client.close()

    def _post(self, client: httpx.Client, body: bytes) -> str | None:
        """None when delivered; else why the last attempt failed."""
        n = self.notifier
        problem = ""
        for attempt in range(n.attempts):
            if attempt:
                time.sleep(RETRY_PAUSE * 2 ** (attempt - 1))
            try:
                with Deadline(n.timeout) as d:
                    r = client.post(self.url, content=body, extensions={"trace": d.trace})
                if 200 <= r.status_code < 300:
                    return None
                problem = f"HTTP {r.status_code}" + (" (a redirect: not followed)" if r.is_redirect else "")
            except httpx.HTTPError as e:
                problem = f"{type(e).__name__}: no answer within {n.timeout:g} s" if isinstance(e, httpx.TimeoutException) else type(e).__name__
        return f"{problem} after {n.attempts} attempts"


class Notifier:
    """`notifier(body)`: queue one event for every URL; `close(wait)`: deliver what is queued, at most `wait` s."""

    def __init__(
        self,
        urls: Sequence[str],
        on_failure: Callable[[str], None],
        *,
        timeout: float = TIMEOUT,
        attempts: int = ATTEMPTS,
    ) -> None:
        self.timeout = timeout
        self.attempts = attempts
        self.on_failure = on_failure
        self._logged: set[str] = set()
        self._lock = threading.Lock()
        self._deliveries = [_Delivery(u, self) for u in urls]

    def __call__(self, body: dict[str, Any]) -> None:
        data = redact_json_text(json.dumps(body, sort_keys=True)).encode()
        for d in self._deliveries:
            try:
                d.queue.put_nowait(data)
            except queue.Full:
                self.failed(d.url, "dropped", f"{QUEUE_SIZE} events already queued: dropped")

    def failed(self, url: str, reason: str, problem: str) -> None:
        """`reason` failed (every attempt) or dropped (not tried: the queue was full, or the run ended)."""
        self.on_failure(reason)
        with self._lock:
            first = url not in self._logged
            self._logged.add(url)
        if first:  # once per run and URL; the counter has every one
            get_logger().warning("notify.failed", url=shown(url), problem=problem, action="counted in bluegreen_notifications_failed_total; logged once per run")

    def close(self, wait: float) -> None:
        """Deliver what is queued (for `--once`, after the lock is released), giving up after `wait` seconds."""
        deadline = time.monotonic() + wait
        for d in self._deliveries:
            try:
                d.queue.put(None, timeout=max(0.0, deadline - time.monotonic()))
            except queue.Full:
                continue
        for d in self._deliveries:
            d.thread.join(max(0.0, deadline - time.monotonic()))
            if d.thread.is_alive():  # still trying: what is left is not delivered
                for _ in range(max(1, d.queue.qsize())):
                    self.failed(d.url, "dropped", f"not delivered within {wait:g} s of the end of the run")
