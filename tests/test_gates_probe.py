"""The http before-switch check (spec.checks.beforeSwitch[].http) reads like the health probe: bounded in time and
size, whatever the new color sends. A loopback HTTP server plays the hostile app."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from controller.drivers.probes import BODY_CAP, Prober

TIMEOUT = 1.0
SLACK = 1.5  # a loaded 2-core host


class _Hostile(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/ok":
            self._answer(200, b"release v2 ready\n")
        elif self.path == "/teapot":
            self._answer(418, b"release v2 ready\n")
        elif self.path == "/huge":
            self._answer(200, b"x" * (BODY_CAP + 10) + b"release v2 ready")
        elif self.path == "/gzip":
            self._answer(200, b"\x1f\x8b....", {"Content-Encoding": "gzip"})
        elif self.path == "/trickle":  # headers at once, then a byte every 100 ms, never ending
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            for _ in range(100):
                try:
                    self.wfile.write(b"r")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.1)

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def prober() -> Iterator[Prober]:
    p = Prober()
    yield p
    p.close()


def test_status_and_body_text(prober: Prober, base: str) -> None:
    assert prober.check(base + "/ok", 200, "v2 ready", TIMEOUT).ok
    assert prober.check(base + "/ok", 200, None, TIMEOUT).ok
    missing = prober.check(base + "/ok", 200, "v3", TIMEOUT)
    assert (missing.ok, missing.detail) == (False, "HTTP 200 but the body (17 bytes) lacks the expected text")
    assert prober.check(base + "/teapot", 200, None, TIMEOUT).detail == "HTTP 418, want 200"
    assert prober.check(base + "/teapot", 418, "ready", TIMEOUT).ok


def test_a_hostile_answer_fails_within_the_timeout_and_the_cap(prober: Prober, base: str) -> None:
    for path, why in [("/trickle", "did not end within"), ("/huge", "body over 64 KiB"), ("/gzip", "Content-Encoding")]:
        started = time.monotonic()
        r = prober.check(base + path, 200, "v2 ready", TIMEOUT)
        took = time.monotonic() - started
        assert not r.ok and why in r.detail, (path, r.detail)
        assert took < TIMEOUT + SLACK, (path, took)
