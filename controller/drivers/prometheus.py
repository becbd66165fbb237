"""verify.prometheus: one instant query, `GET <url>/api/v1/query?query=...`, bounded like the health probes.

Prometheus's answer is as untrusted as an app's: the read ends at the timeout whatever the server sends (the
probes' watchdog shuts the socket down), at most BODY_CAP bytes are read, a redirect is never followed (it could
lead anywhere), and nothing is raised: every failure is a `PromAnswer` without a value and with a one-line why.
The URL is never quoted in a message, and one carrying credentials is refused before any request, so a
user:password cannot reach a log, status or history line even if the spec check were bypassed.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import httpx

from controller.drivers.probes import (  # the one socket watchdog and bounded read
    Deadline,
    Incomplete,
    Prober,
    read_capped,
)
from controller.kernel.errors import one_line
from controller.world.protocol import PromAnswer
from controller.world.verification import prom_answer

BODY_CAP = 64 * 1024  # an instant query of one number answers a few hundred bytes


class PromClient:
    def __init__(self, prober: Prober | None = None) -> None:
        # The probes' HTTP client (HostWorld passes its own: one client a run): no proxy from the environment, no
        # redirect followed, no keep-alive (every query's deadline can cut its socket), the body read raw.
        self._owned = prober is None
        self._prober = prober or Prober()
        self._client = self._prober.client

    def close(self) -> None:
        if self._owned:
            self._prober.close()

    def query(self, url: str, query: str, timeout: float) -> PromAnswer:
        try:
            parts = urlsplit(url)
        except ValueError:
            return PromAnswer(None, "the Prometheus URL is not a URL")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return PromAnswer(None, "the Prometheus URL is not http(s)")
        if parts.username is not None or parts.password is not None:
            return PromAnswer(None, "credentials in the Prometheus URL refused")
        target = url.rstrip("/") + "/api/v1/query"
        deadline: Deadline | None = None
        try:
            with Deadline(timeout) as deadline, self._client.stream(
                "GET",
                target,
                params={"query": query},
                headers={"Accept": "application/json"},
                timeout=timeout,
                extensions={"trace": deadline.trace},
            ) as r:
                status = r.status_code
                if r.is_redirect:
                    return PromAnswer(None, f"HTTP {status}: redirect not followed")
                body = read_capped(r, deadline, timeout, cap=BODY_CAP, unlike="one number")
        except Incomplete as e:
            return PromAnswer(None, str(e))
        except httpx.HTTPError as e:
            if (deadline is not None and deadline.expired) or isinstance(e, httpx.TimeoutException):
                return PromAnswer(None, f"no complete answer within {timeout:g}s")
            if isinstance(e, httpx.ConnectError):
                return PromAnswer(None, "connection refused" if "refused" in str(e).lower() else "cannot connect")
            return PromAnswer(None, f"HTTP error ({type(e).__name__})")  # its text may quote the URL: left out
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            return PromAnswer(None, f"HTTP {status}: not JSON")
        answer = prom_answer(doc)
        if status != 200:
            # Prometheus answers 400/422/503 with {"status": "error", ...}: its error says why.
            return PromAnswer(None, f"HTTP {status}: {one_line(answer.detail, 200)}" if answer.value is None else f"HTTP {status}")
        return answer
