"""Running test containers with the SDK, labelled so the harness can always clean them up."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx

from .images import CONTAINER_PORT
from .net import free_port

LABEL_APP = "bluegreen.app"  # the controller's own label (controller/world/facts.py)
LABEL_TEST = "bluegreen.test"  # test session id; AppSpec.labels allows it


@dataclass
class RunningContainer:
    container: Any
    host_port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.host_port}"

    @property
    def id(self) -> str:
        return str(self.container.id)

    def logs(self) -> str:
        try:
            return bytes(self.container.logs()).decode(errors="replace")
        except Exception as e:  # container gone
            return f"<no logs: {e}>"

    def status(self) -> str:
        self.container.reload()
        return str(self.container.status)

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Wait until the app answers HTTP (GET /version -> 200), whatever its health mode.

        A TCP connect is not enough: docker-proxy accepts on the host port before the app listens.
        """
        wait_http(self.base_url + "/version", status=200, timeout=timeout)

    def wait_http(
        self, path: str = "/actuator/health", status: int = 200, timeout: float = 15.0
    ) -> httpx.Response:
        return wait_http(self.base_url + path, status=status, timeout=timeout)


def run_test_container(
    client: Any,
    image: str,
    *,
    labels: dict[str, str],
    host_port: int | None = None,
    env: dict[str, str] | None = None,
    name: str | None = None,
    container_port: int = CONTAINER_PORT,
    **kwargs: Any,
) -> RunningContainer:
    """``docker run -d -p 127.0.0.1:<host_port>:8081`` with `labels` (include the session label!)."""
    port = host_port if host_port is not None else free_port()
    container = client.containers.run(
        image,
        detach=True,
        name=name,
        labels=labels,
        environment=env or {},
        ports={f"{container_port}/tcp": ("127.0.0.1", port)},
        **kwargs,
    )
    return RunningContainer(container, port)


def wait_http(
    url: str, status: int = 200, timeout: float = 15.0, request_timeout: float = 2.0
) -> httpx.Response:
    """GET `url` until it answers `status`; TimeoutError (with the last answer or error) after `timeout`."""
    deadline = time.monotonic() + timeout
    last: str = "no attempt"
    while True:
        try:
            r = httpx.get(url, timeout=request_timeout)
            if r.status_code == status:
                return r
            last = f"HTTP {r.status_code}: {r.text[:200]!r}"
        except httpx.HTTPError as e:
            last = repr(e)
        if time.monotonic() >= deadline:
            raise TimeoutError(f"GET {url} did not answer {status} within {timeout:g}s (last: {last})")
        time.sleep(0.1)


def remove_containers(client: Any, filters: Iterable[dict[str, Any]]) -> list[str]:
    """Force-remove (with volumes) every container matching any of the label `filters`; returns their names."""
    import docker.errors

    removed: list[str] = []
    seen: set[str] = set()
    for flt in filters:
        try:
            found = client.containers.list(all=True, filters=flt)
        except docker.errors.APIError:
            continue
        for c in found:
            if c.id in seen:
                continue
            seen.add(c.id)
            try:
                c.remove(force=True, v=True)
                removed.append(c.name)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError:
                # e.g. "removal already in progress": leave it to the next sweep
                pass
    return removed
