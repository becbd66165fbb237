"""Test helpers shipped with the package: `FakeWorld`, an in-memory `World` (logs: use structlog.testing.capture_logs).

`FakeWorld` behaves like the host as far as the controller can observe it; `tests/test_contract.py`
runs one scenario against it and against the real drivers so the two cannot drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from controller.errors import DockerError, DockerUnavailable, ImageError, NginxError
from controller.facts import ContainerFact, include_servers, port_of
from controller.world import ContainerRequest, HealthResult, RouteProbe


class Crash(BaseException):
    """Raised by FakeWorld when its mutation budget runs out: simulates kill -9 of the controller."""


@dataclass
class FakeImage:
    health: str = "up"  # up | never | slow | crash
    slow_seconds: float = 0.0


@dataclass
class FakeContainer:
    fact: ContainerFact
    env: dict[str, str]
    started_at: float | None
    broken: bool = False  # a perturbation: the app inside stops answering its health check


_ROUTE_URL = re.compile(r"/bluegreen/(?P<app>[a-z0-9-]+)/")


@dataclass
class FakeWorld:
    images: dict[str, FakeImage] = field(default_factory=dict)
    containers: dict[str, FakeContainer] = field(default_factory=dict)
    files: dict[Path, str] = field(default_factory=dict)
    clock: float = 1_000_000.0
    docker_up: bool = True
    nginx_up: bool = True
    nginx_test_fails: bool = False
    reload_ignored: bool = False  # the master rejects the new config: the old one stays live
    # Upstream blocks Nginx has loaded: name -> servers (the state a reload makes live).
    loaded: dict[str, list[str]] = field(default_factory=dict)
    include_paths: set[Path] = field(default_factory=set)
    # The site is the flag-aware one of nginx/: requests for <app> go to upstream <app>-green while the
    # flag file exists, else <app>-blue. Flag file per app; default <include dir>/<app>.green (the spec's).
    flag_files: dict[str, Path] = field(default_factory=dict)
    crash_after: int | None = None  # mutations left before Crash
    mutations: list[str] = field(default_factory=list)
    _next_id: int = 0

    # Bookkeeping -----------------------------------------------------------------------------
    def _mutate(self, what: str) -> None:
        if self.crash_after is not None:
            if self.crash_after <= 0:
                raise Crash(what)
            self.crash_after -= 1
        self.mutations.append(what)

    def _docker(self) -> None:
        if not self.docker_up:
            raise DockerUnavailable("list containers: Docker daemon unreachable: connection refused")

    def _health_now(self, c: FakeContainer) -> bool:
        if c.fact.state != "running" or c.broken:
            return False
        img = self.images.get(c.fact.image, FakeImage())
        if img.health == "up":
            return True
        if img.health == "slow":
            return c.started_at is not None and self.clock >= c.started_at + img.slow_seconds
        return False

    def _settle(self) -> None:
        # A "crash" image exits shortly after it starts.
        for c in self.containers.values():
            img = self.images.get(c.fact.image, FakeImage())
            if img.health == "crash" and c.fact.state == "running" and c.started_at is not None and self.clock >= c.started_at + 1:
                c.fact = replace(c.fact, state="exited")

    # Docker ----------------------------------------------------------------------------------
    def list_containers(self) -> list[ContainerFact]:
        self._docker()
        self._settle()
        return [c.fact for c in self.containers.values()]

    def started_at(self, name: str) -> float | None:
        self._docker()
        c = self.containers.get(name)
        return c.started_at if c else None

    def ensure_image(self, image: str) -> None:
        self._docker()
        if image not in self.images:
            raise ImageError(f"image {image} is not present locally and cannot be pulled: not found")

    def create_container(self, req: ContainerRequest) -> None:
        self._docker()
        if req.image not in self.images:
            raise ImageError(f"image {req.image} is not present locally and cannot be pulled: not found")
        if req.name in self.containers:
            raise DockerError(f"create {req.name}: Conflict. The container name is already in use")
        for c in self.containers.values():
            if c.fact.state == "running" and c.fact.host_port == req.host_port:
                raise DockerError(f"start {req.name}: port is already allocated")
        self._mutate(f"create {req.name}")
        self._next_id += 1
        fact = ContainerFact(
            name=req.name,
            id=f"{self._next_id:064x}",
            image=req.image,
            image_id=f"sha256:{abs(hash(req.image)):064x}"[:71],
            labels=dict(req.labels),
            state="running",
            host_ip=req.host_ip,
            host_port=req.host_port,
            created=self.clock,
        )
        self.containers[req.name] = FakeContainer(fact, dict(req.env), self.clock)

    def start_container(self, name: str) -> None:
        self._docker()
        c = self._get(name)
        self._mutate(f"start {name}")
        c.fact = replace(c.fact, state="running")
        c.started_at = self.clock

    def stop_container(self, name: str, timeout: int) -> None:
        self._docker()
        c = self._get(name)
        self._mutate(f"stop {name}")
        c.fact = replace(c.fact, state="exited")

    def remove_container(self, name: str) -> None:
        self._docker()
        if name in self.containers:
            self._mutate(f"remove {name}")
            del self.containers[name]

    def _get(self, name: str) -> FakeContainer:
        c = self.containers.get(name)
        if c is None:
            raise DockerError(f"{name}: not found: No such container: {name}")
        return c

    def connections_to(self, host_port: int) -> int:
        return 0

    # HTTP ------------------------------------------------------------------------------------
    def probe_health(self, url: str, expect_status: int, timeout: float) -> HealthResult:
        self._settle()
        port = port_of(url.split("//", 1)[-1].split("/", 1)[0])
        for c in self.containers.values():
            if c.fact.state == "running" and c.fact.host_port == port:
                return HealthResult(True, "HTTP 200 UP") if self._health_now(c) else HealthResult(False, "HTTP 503")
        return HealthResult(False, "connection refused")

    def probe_route(self, url: str, timeout: float) -> RouteProbe:
        if not self.nginx_up:
            return RouteProbe(False, "", f"GET {url}: connection refused")
        m = _ROUTE_URL.search(url)
        servers = self.routed(m.group("app")) if m else []
        if not servers:
            # Like Nginx: an upstream whose servers are all down answers 502 and names itself in $upstream_addr.
            named = m.group("app") if m and m.group("app") in self.loaded else ""
            return RouteProbe(True, named, f"HTTP 502 via {named or 'no upstream'}")
        return RouteProbe(True, servers[0], f"HTTP 200 via {servers[0]}")

    # Files and commands ------------------------------------------------------------------------
    def read_file(self, path: Path) -> str | None:
        return self.files.get(path)

    def write_file(self, path: Path, content: str, mode: int = 0o644) -> None:
        self._mutate(f"write {path}")
        self.files[path] = content

    def remove_file(self, path: Path) -> None:
        self._mutate(f"remove {path}")
        self.files.pop(path, None)

    def run(self, argv: list[str], timeout: float) -> None:
        if "reload" in argv:
            self._mutate("reload")
            if not self.nginx_up:
                raise NginxError(f"{' '.join(argv)} failed (exit 1): open() nginx.pid failed (2: No such file or directory)")
            self.reload()
        else:
            if self.nginx_test_fails or any(self._invalid(p) for p in self.include_paths):
                raise NginxError(f"{' '.join(argv)} failed (exit 1): nginx: configuration file test failed")

    def _invalid(self, path: Path) -> bool:
        text = self.files.get(path)
        return text is None or "upstream" not in text or text.count("{") != text.count("}")

    def reload(self) -> None:
        """What a successful `nginx -s reload` does: make the include files live (unless rejected).

        The new configuration replaces the old one whole: upstream blocks no include defines any more are gone.
        """
        if self.reload_ignored:
            return
        loaded: dict[str, list[str]] = {}
        for path in sorted(self.include_paths):
            text = self.files.get(path)
            if text is None:
                continue
            for m in re.finditer(r"upstream\s+([a-z0-9-]+)\s*\{([^{}]*)\}", text):
                loaded[m.group(1)] = include_servers(m.group(2))
        self.loaded = loaded

    def flag_present(self, app: str) -> bool:
        if app in self.flag_files:
            return self.flag_files[app] in self.files
        return any(p.parent / f"{app}.green" in self.files for p in self.include_paths)

    def routed(self, app: str) -> list[str]:
        """Servers a request for `app` reaches now: the flag-aware site's `if (-f flag)` over the loaded upstreams."""
        return self.loaded.get(f"{app}-green" if self.flag_present(app) else f"{app}-blue", [])

    def now(self) -> float:
        return self.clock

    def sleep(self, seconds: float) -> None:
        self.clock += seconds
