"""HTTP probes: a color's health check, and the route check through Nginx's control server.

Every probe ends within its timeout, whatever the app does: httpx's timeouts bound each connect/read, so an
app that sends a byte a second (headers or body) would hold the controller, and the global lock, for as long
as it likes. A watchdog shuts the probe's socket down at the deadline, which ends any blocking read at once.
A health answer is read up to BODY_CAP bytes; one that is larger, or does not end within the deadline (an
endless stream), is not healthy.

One client for every probe and query of a run (Prometheus's too): its plain-http transport sets up no TLS (no CA
bundle loaded for the loopback probes of every pass); the https transport is made at the first https:// request.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx

from controller.world.protocol import HealthResult, RouteProbe

UPSTREAM_HEADER = "X-Bluegreen-Upstream"
BODY_CAP = 64 * 1024  # bytes of a health answer read at most; a health answer is a few dozen


class Deadline:
    """Shuts down the probe's socket when `timeout` seconds have passed (httpx only bounds each read)."""

    def __init__(self, timeout: float) -> None:
        self.at = time.monotonic() + timeout
        self.expired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(timeout, self._expire)
        self._timer.daemon = True

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpx/httpcore "trace" request extension: learns the socket of each new connection."""
        if event != "connection.connect_tcp.complete":
            return
        sock = info["return_value"].get_extra_info("socket")
        with self._lock:
            self._sock = sock if isinstance(sock, socket.socket) else None
            late = self.expired
        if late:
            self._shutdown()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
        self._shutdown()

    def _shutdown(self) -> None:
        with self._lock:
            sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # a blocked recv() returns at once

    def left(self) -> float:
        return self.at - time.monotonic()

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


class Incomplete(Exception):
    """The body did not end within the cap or the deadline (detail in args[0])."""


class _HttpsOnFirstUse(httpx.BaseTransport):
    """The https:// transport (certificates checked against certifi's CA bundle, as httpx does by default), made at
    the first https:// request: loading the bundle costs a cron run tens of milliseconds it does not need for http."""

    def __init__(self, limits: httpx.Limits) -> None:
        self._limits = limits
        self._transport: httpx.HTTPTransport | None = None
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            if self._transport is None:
                self._transport = httpx.HTTPTransport(trust_env=False, limits=self._limits)
            transport = self._transport
        return transport.handle_request(request)

    def close(self) -> None:
        with self._lock:
            if self._transport is not None:
                self._transport.close()


class Prober:
    def __init__(self) -> None:
        # No keep-alive: every probe opens its own connection, so its deadline can always cut it.
        limits = httpx.Limits(max_keepalive_connections=0)
        # Mounted for http:// only, so this context never makes a TLS connection; were it to, it would refuse
        # every certificate (no CA loaded, hostnames checked): the context only spares loading the CA bundle.
        no_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.client = httpx.Client(
            trust_env=False,  # an HTTP(S)_PROXY in the environment must never catch loopback probes
            follow_redirects=False,
            # identity: the body is read raw, so a small compressed answer cannot inflate past the cap.
            headers={"User-Agent": "bluegreen-controller", "Accept-Encoding": "identity"},
            transport=_HttpsOnFirstUse(limits),
            mounts={"http://": httpx.HTTPTransport(verify=no_tls, trust_env=False, limits=limits)},
        )

    def close(self) -> None:
        self.client.close()

    @contextlib.contextmanager
    def _get(self, url: str, timeout: float) -> Iterator[tuple[httpx.Response, Deadline]]:
        with Deadline(timeout) as deadline, self.client.stream(
            "GET", url, timeout=timeout, extensions={"trace": deadline.trace}
        ) as r:
            yield r, deadline

    def _answer(self, url: str, timeout: float) -> tuple[httpx.Response, bytes] | HealthResult:
        """The response and its body, read within `timeout` and the size cap; or why there is none (a failed result)."""
        deadline: Deadline | None = None
        try:
            with self._get(url, timeout) as (r, deadline):
                return r, read_capped(r, deadline, timeout)
        except Incomplete as e:
            return HealthResult(False, str(e))
        except httpx.HTTPError as e:
            if (deadline is not None and deadline.expired) or isinstance(e, httpx.TimeoutException):
                return HealthResult(False, f"no complete answer within {timeout:g}s")
            return HealthResult(False, _reason(e))

    def health(self, url: str, expect_status: int, timeout: float) -> HealthResult:
        answer = self._answer(url, timeout)
        if isinstance(answer, HealthResult):
            return answer
        r, body = answer
        if r.status_code != expect_status:
            return HealthResult(False, f"HTTP {r.status_code}")
        # Spring Boot answers {"status": "UP"}; anything else with a status field is not healthy.
        status = _json_status(r, body)
        if status is not None and status != "UP":
            return HealthResult(False, f"HTTP {r.status_code} status={status}")
        return HealthResult(True, f"HTTP {r.status_code}" + (f" {status}" if status else ""))

    def check(self, url: str, expect_status: int, body_contains: str | None, timeout: float) -> HealthResult:
        """A before-switch http check (spec.checks): the same bounded read as `health`, then status and body text."""
        answer = self._answer(url, timeout)
        if isinstance(answer, HealthResult):
            return answer
        r, body = answer
        if r.status_code != expect_status:
            return HealthResult(False, f"HTTP {r.status_code}, want {expect_status}")
        if body_contains is not None and body_contains.encode() not in body:
            return HealthResult(False, f"HTTP {r.status_code} but the body ({len(body)} bytes) lacks the expected text")
        return HealthResult(True, f"HTTP {r.status_code}")

    def route(self, url: str, timeout: float) -> RouteProbe:
        # Only the status and the upstream header matter: the body is never read (the connection is closed).
        deadline: Deadline | None = None
        try:
            with self._get(url, timeout) as (r, deadline):
                status, upstream = r.status_code, r.headers.get(UPSTREAM_HEADER, "")
        except httpx.HTTPError as e:
            timed_out = (deadline is not None and deadline.expired) or isinstance(e, httpx.TimeoutException)
            return RouteProbe(False, "", f"GET {url}: {'timed out' if timed_out else _reason(e)}")
        if not upstream and status == 404:
            return RouteProbe(False, "", f"GET {url}: HTTP 404 without {UPSTREAM_HEADER}: control location missing")
        return RouteProbe(True, upstream, f"HTTP {status} via {upstream or 'no upstream'}", status)


def read_capped(
    r: httpx.Response, deadline: Deadline, timeout: float, *, cap: int = BODY_CAP, unlike: str = "a health answer"
) -> bytes:
    """The whole body, identity-encoded, at most `cap` bytes, before the deadline; else Incomplete (why).
    `unlike` names what an over-long body cannot be, for the message."""
    encoding = r.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise Incomplete(f"HTTP {r.status_code} with Content-Encoding {encoding[:20]!r} although identity was asked")
    body = bytearray()
    try:
        for chunk in r.iter_raw():
            body += chunk
            if len(body) > cap:
                raise Incomplete(f"HTTP {r.status_code} with a body over {cap // 1024} KiB: not {unlike}")
            if deadline.left() <= 0:
                break
    except httpx.HTTPError:
        if not deadline.expired:
            raise
    if deadline.expired or deadline.left() <= 0:
        raise Incomplete(
            f"HTTP {r.status_code} but the body did not end within {timeout:g}s ({len(body)} bytes): a stream or a stalled app"
        )
    return bytes(body)


def _json_status(r: httpx.Response, body: bytes) -> str | None:
    if "json" not in r.headers.get("content-type", "") and not body.startswith(b"{"):
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    status = doc.get("status") if isinstance(doc, dict) else None
    return str(status) if status is not None else None


def _reason(e: httpx.HTTPError) -> str:
    if isinstance(e, httpx.TimeoutException):
        return "timed out"
    if isinstance(e, httpx.ConnectError):
        return "connection refused" if "refused" in str(e).lower() else f"cannot connect ({str(e)[:120]})"
    return f"{type(e).__name__}: {str(e)[:160]}"
