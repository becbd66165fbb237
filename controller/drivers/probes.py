"""HTTP probes: a color's health check, and the route check through Nginx's control server."""

from __future__ import annotations

import json

import httpx

from controller.world import HealthResult, RouteProbe

UPSTREAM_HEADER = "X-Bluegreen-Upstream"


class Prober:
    def __init__(self) -> None:
        # trust_env=False: an HTTP(S)_PROXY in the environment must never catch loopback probes.
        self._client = httpx.Client(trust_env=False, follow_redirects=False, headers={"User-Agent": "bluegreen-controller"})

    def close(self) -> None:
        self._client.close()

    def health(self, url: str, expect_status: int, timeout: float) -> HealthResult:
        try:
            r = self._client.get(url, timeout=timeout)
        except httpx.HTTPError as e:
            return HealthResult(False, _reason(e))
        if r.status_code != expect_status:
            return HealthResult(False, f"HTTP {r.status_code}")
        # Spring Boot answers {"status": "UP"}; anything else with a status field is not healthy.
        status = _json_status(r)
        if status is not None and status != "UP":
            return HealthResult(False, f"HTTP {r.status_code} status={status}")
        return HealthResult(True, f"HTTP {r.status_code}" + (f" {status}" if status else ""))

    def route(self, url: str, timeout: float) -> RouteProbe:
        try:
            r = self._client.get(url, timeout=timeout)
        except httpx.HTTPError as e:
            return RouteProbe(False, "", f"GET {url}: {_reason(e)}")
        upstream = r.headers.get(UPSTREAM_HEADER, "")
        if not upstream and r.status_code == 404:
            return RouteProbe(False, "", f"GET {url}: HTTP 404 without {UPSTREAM_HEADER}: control location missing")
        return RouteProbe(True, upstream, f"HTTP {r.status_code} via {upstream or 'no upstream'}")


def _json_status(r: httpx.Response) -> str | None:
    if "json" not in r.headers.get("content-type", "") and not r.content.startswith(b"{"):
        return None
    try:
        body = json.loads(r.content[:65536])
    except ValueError:
        return None
    status = body.get("status") if isinstance(body, dict) else None
    return str(status) if status is not None else None


def _reason(e: httpx.HTTPError) -> str:
    if isinstance(e, httpx.TimeoutException):
        return "timed out"
    if isinstance(e, httpx.ConnectError):
        return "connection refused" if "refused" in str(e).lower() else f"cannot connect ({str(e)[:120]})"
    return f"{type(e).__name__}: {str(e)[:160]}"
