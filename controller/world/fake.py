"""Test helpers shipped with the package: `FakeWorld`, an in-memory `World` (logs: use structlog.testing.capture_logs).

`FakeWorld` behaves like the host as far as the controller can observe it, for both kinds: an app's colors
and hooks, and accessories (containers by name, named volumes, networks, one-offs, in-container checks), plus
the access log, Prometheus and the host's capacity. One clock (`sleep` advances it; the wall clock can be stepped apart from it: `step_wall`) and one crash budget
(`crash_after`: every mutation of either kind counts) serve both, so apps and accessories are property-tested
together. `tests/test_contract.py` calls every `World` method on it and on the real drivers with the same
assertions, so the two cannot drift apart.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from controller.kernel.errors import (
    DockerError,
    DockerUnavailable,
    HostError,
    ImageError,
    NginxError,
    one_line,
)
from controller.world.facts import (
    COLOR_CONTAINER_NAME,
    LABEL_ACCESSORY,
    LABEL_ACCESSORY_IMAGE,
    LABEL_APP,
    LABEL_ONEOFF,
    AccessoryFact,
    CapacityFact,
    ContainerFact,
    ImageFact,
    include_servers,
    port_of,
)
from controller.world.protocol import (
    HOOK_LOG_LINES_READ,
    AccessoryRequest,
    CommandResult,
    ContainerRequest,
    HealthResult,
    HookRequest,
    HookState,
    LogPos,
    LogRead,
    OneOff,
    OneOffResult,
    PromAnswer,
    RouteProbe,
    RunState,
    exec_result,
)
from controller.world.verification import prom_answer


class Crash(BaseException):
    """Raised by FakeWorld when its mutation budget runs out: simulates kill -9 of the controller."""


@dataclass
class FakeImage:
    # up | never | slow (UP `slow_seconds` after start) | crash (UP, exits 1 s after start) |
    # crashloop (UP, exits `slow_seconds` (default 1.5) after start). A container that exits is started again
    # per its restart policy, like Docker: 0.1 s later, doubling per restart up to 60 s, restart count + 1.
    health: str = "up"
    slow_seconds: float = 0.0
    created: float = 0.0  # the image's creation time (pruning keeps the most recent)
    # What a command run in a container of this image answers (`docker exec`: check_command; a one-off:
    # run_oneoff): argv -> (exit code, output); None: it runs on past any timeout. A command not listed does
    # not exist in the image.
    execs: dict[tuple[str, ...], tuple[int | None, str]] = field(default_factory=dict)
    listens: tuple[int, ...] | None = None  # container ports it accepts connections on; None: every port
    volumes: tuple[str, ...] = ()  # paths it declares as VOLUME: an accessory's container gets an anonymous volume at each

    @property
    def lifetime(self) -> float | None:
        """Seconds a run lasts before the main process exits; None: until stopped."""
        if self.health == "crash":
            return 1.0
        if self.health == "crashloop":
            return self.slow_seconds or 1.5
        return None


@dataclass
class FakeContainer:
    fact: ContainerFact
    env: dict[str, str]
    started_at: float | None
    broken: bool = False  # a perturbation: the app inside stops answering its health check
    restart_policy: str = "unless-stopped"
    restart_count: int = 0  # restarts by Docker since created or last started by hand (`docker start` resets it)
    restart_at: float | None = None  # state "restarting": when Docker starts it again
    command: list[str] | None = None  # a hook container: its command (exits `hook_seconds` after its start)
    exit_code: int | None = None
    output: tuple[str, ...] = ()
    request: ContainerRequest | AccessoryRequest | None = None  # what it was created with (None: a stranger's)
    ports: dict[int, int] = field(default_factory=dict)  # container port -> published host port
    networks: list[str] = field(default_factory=list)
    mounts: dict[str, str] = field(default_factory=dict)  # volume -> path (an accessory's)

    @property
    def state(self) -> str:
        return self.fact.state


def _missing_command(argv: list[str]) -> str:
    return f'OCI runtime exec failed: exec failed: unable to start container process: exec: "{argv[0]}": executable file not found in $PATH'


_ROUTE_URL = re.compile(r"/bluegreen/(?P<app>[a-z0-9-]+)/")
_PREVIEW_URL = re.compile(r"/bluegreen-preview/(?P<app>[a-z0-9-]+)/")  # the control server's preview route
_MAINTENANCE_URL = re.compile(r"/bluegreen-maintenance/(?P<app>[a-z0-9-]+)$")  # ... and its maintenance route


@dataclass
class FakeWorld:
    images: dict[str, FakeImage] = field(default_factory=dict)
    containers: dict[str, FakeContainer] = field(default_factory=dict)
    files: dict[Path, str] = field(default_factory=dict)
    # The time that passes (`sleep` and the tests advance it): the monotonic clock; the wall clock (`now`) is it
    # plus `wall_step` (step_wall). Docker's timestamps (created, StartedAt) are on `clock`.
    clock: float = 1_000_000.0
    wall_step: float = 0.0
    boots: int = 0  # reboot()
    boot_at: float = 0.0  # `clock` when the monotonic clock read 0
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
    # Deploy gates: what a hook container's command and a check command do: (argv, env) -> (exit code, output
    # lines); a hook runs `hook_seconds`; a check URL's path answers `pages[path]` (status, body) when healthy.
    hook_script: Callable[[list[str], dict[str, str]], tuple[int, tuple[str, ...]]] = lambda argv, env: (0, ())
    hook_seconds: float = 0.0
    check_script: Callable[[list[str], dict[str, str]], tuple[int | None, tuple[str, ...]]] = lambda argv, env: (0, ())  # None: timed out
    pages: dict[str, tuple[int, str]] = field(default_factory=dict)
    hook_runs: list[str] = field(default_factory=list)  # names of hook containers started, in order
    # `images` is also the registry: a pruned (locally removed) image is listed no more and pulled again on use.
    pruned: set[str] = field(default_factory=set)
    # The host's capacity (issue 14), as drivers/capacity.py reads it: meminfo, Docker's CPUs, free disk under
    # Docker's root; `meminfo_missing` is a BLUEGREEN_MEMINFO naming no file (HostError, like the real driver).
    mem_total: int = 8 * 1024**3
    mem_available: int = 6 * 1024**3  # before any container runs; each running one takes container_memory
    meminfo_missing: bool = False
    cpus: int = 2
    disk_free: int | None = 100 * 1024**3
    container_memory: int = 16 * 1024**2  # what each running container uses
    image_size: int = 2 * 1024**2
    # verify.prometheus: query -> the document Prometheus answers (default: an empty vector); `prom_up` False is
    # nothing listening at the URL. Every query asked is kept in `prom_queries`.
    prom_answers: dict[str, Any] = field(default_factory=dict)
    prom_up: bool = True
    prom_queries: list[str] = field(default_factory=list)
    # Accessories: named volumes (name -> labels; never removed), networks (name -> labels), one-offs run.
    volumes: dict[str, dict[str, str]] = field(default_factory=dict)
    networks: dict[str, dict[str, str]] = field(default_factory=lambda: {"bridge": {}})
    oneoffs: list[OneOff] = field(default_factory=list)
    # Established connections to a host port (a drain waits for 0), as a test holds them open.
    connections: dict[int, int] = field(default_factory=dict)
    # Nginx's access log: path -> (inode, bytes written); `log_access` appends, `rotate_access_log` starts anew.
    access_logs: dict[Path, tuple[int, bytes]] = field(default_factory=dict)
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
        if img.health in ("up", "crash", "crashloop"):
            return True
        if img.health == "slow":
            return c.started_at is not None and self.clock >= c.started_at + img.slow_seconds
        return False

    def _settle(self) -> None:
        # "crash" and "crashloop" images exit shortly after they start; Docker restarts them per their policy.
        for c in self.containers.values():
            if c.command is not None:
                self._settle_hook(c)
                continue
            life = self.images.get(c.fact.image, FakeImage()).lifetime
            if life is None:
                continue
            for _ in range(10_000):
                if c.fact.state == "running" and c.started_at is not None and self.clock >= c.started_at + life:
                    exited = c.started_at + life
                    if c.restart_policy in ("always", "unless-stopped") or (c.restart_policy == "on-failure" and c.restart_count < 5):
                        c.fact = replace(c.fact, state="restarting")
                        c.restart_at = exited + min(60.0, 0.1 * 2.0**c.restart_count)
                    else:
                        c.fact = replace(c.fact, state="exited")
                elif c.fact.state == "restarting" and c.restart_at is not None and self.clock >= c.restart_at:
                    self._restarted(c, c.restart_at)
                else:
                    break

    def _restarted(self, c: FakeContainer, at: float) -> None:
        c.fact = replace(c.fact, state="running")
        c.started_at, c.restart_at = at, None
        c.restart_count += 1

    def docker_restarted(self, name: str) -> None:
        """A perturbation: the app's main process died and Docker started it again just now."""
        c = self.containers.get(name)
        if c is not None and c.fact.state in ("running", "restarting"):
            self._restarted(c, self.clock)

    # Docker ----------------------------------------------------------------------------------
    def list_containers(self) -> list[ContainerFact]:
        self._docker()
        self._settle()
        return [c.fact for c in self.containers.values() if LABEL_APP in c.fact.labels or COLOR_CONTAINER_NAME.match(c.fact.name)]

    def list_accessories(self, names: frozenset[str]) -> list[AccessoryFact]:
        self._docker()
        self._settle()
        return [
            AccessoryFact(
                n,
                c.fact.id,
                c.fact.labels.get(LABEL_ACCESSORY_IMAGE) or c.fact.image,
                dict(c.fact.labels),
                c.state,
                tuple(sorted(c.networks)),
                tuple(sorted(c.mounts.items())),
            )
            for n, c in sorted(self.containers.items())
            if (LABEL_ACCESSORY in c.fact.labels or n in names) and LABEL_ONEOFF not in c.fact.labels
        ]

    def run_state(self, name: str) -> RunState | None:
        self._docker()
        self._settle()
        c = self.containers.get(name)
        if c is None:
            return None
        state = c.fact.state
        uptime = self.clock - c.started_at if state == "running" and c.started_at is not None else None  # `clock` is the boot clock
        return RunState(state == "running", state == "restarting", c.started_at, c.restart_count, uptime)

    def ensure_image(self, image: str) -> None:
        self._docker()
        if image not in self.images:
            raise ImageError(f"image {image} is not present locally and cannot be pulled: not found")
        self.pruned.discard(image)  # pulled again

    def create_container(self, req: ContainerRequest | AccessoryRequest) -> None:
        self._docker()
        if req.image not in self.images:
            raise ImageError(f"image {req.image} is not present locally and cannot be pulled: not found")
        if req.name in self.containers:
            raise DockerError(f"create {req.name}: Conflict. The container name \"/{req.name}\" is already in use")
        if req.network is not None and req.network not in self.networks:
            raise DockerError(f"create {req.name}: network {req.network} not found")
        self.pruned.discard(req.image)  # pulled again
        if isinstance(req, ContainerRequest) and req.nano_cpus is not None and req.nano_cpus > self.cpus * 10**9:
            # Docker refuses it at create: nothing is made
            raise DockerError(
                f"create {req.name}: Range of CPUs is from 0.01 to {self.cpus}.00, as there are only {self.cpus} CPUs available"
            )
        ports = {req.container_port: req.host_port} if isinstance(req, ContainerRequest) else dict(req.ports)
        for c in self.containers.values():
            if c.state == "running" and set(c.ports.values()) & set(ports.values()):
                raise DockerError(f"start {req.name}: port is already allocated")
        self._mutate(f"create {req.name}")
        mounts: dict[str, str] = {}
        if isinstance(req, AccessoryRequest):
            for vol in req.volumes:
                self.volumes.setdefault(vol, {})  # Docker creates a missing named volume on mount
            mounts = dict(req.volumes)
            for path in self.images[req.image].volumes:
                if path not in mounts.values():  # an image's VOLUME no requested volume covers: a new anonymous one
                    self._next_id += 1
                    anonymous = hashlib.sha256(f"volume-{self._next_id}".encode()).hexdigest()
                    self.volumes[anonymous] = {}
                    mounts[anonymous] = path
        self._next_id += 1
        first = next(iter(ports.items()), None)
        fact = ContainerFact(
            name=req.name,
            id=f"{self._next_id:064x}",
            image=req.image,
            image_id=self.image_id_of(req.image),
            labels=dict(req.labels),
            state="running",
            host_ip=req.host_ip if first is not None else None,
            host_port=first[1] if first is not None else None,
            created=self.clock,
        )
        self.containers[req.name] = FakeContainer(
            fact, dict(req.env), self.clock, restart_policy=req.restart_policy, request=req, ports=ports, networks=[req.network or "bridge"],
            mounts=mounts,
        )  # fmt: skip

    def add_stranger(self, name: str, image: str = "other:1", labels: dict[str, str] | None = None) -> None:
        """A container someone else made (not through the World): never to be touched by the controller."""
        self._next_id += 1
        fact = ContainerFact(name, f"{self._next_id:064x}", image, self.image_id_of(image), dict(labels or {}), "running", None, None, self.clock)
        self.containers[name] = FakeContainer(fact, {}, self.clock, networks=["bridge"])

    def kill(self, name: str) -> None:
        """A perturbation: the container's main process died and stays down (restart policy aside)."""
        c = self.containers[name]
        c.fact = replace(c.fact, state="exited")
        c.restart_at = None

    def start_container(self, name: str) -> None:
        self._docker()
        c = self._get(name)
        self._mutate(f"start {name}")
        if c.fact.state in ("running", "restarting"):
            return  # Docker: 304 Not Modified, the run goes on
        if c.command is not None:
            self._start_hook(c)
            return
        c.fact = replace(c.fact, state="running")
        c.started_at, c.restart_at, c.restart_count = self.clock, None, 0

    def stop_container(self, name: str, timeout: int) -> None:
        self._docker()
        c = self._get(name)
        self._mutate(f"stop {name}")
        c.fact = replace(c.fact, state="exited")
        c.restart_at = None

    def remove_container(self, name: str) -> None:
        self._docker()
        if name in self.containers:
            self._mutate(f"remove {name}")
            del self.containers[name]

    def rename_container(self, name: str, new_name: str) -> None:
        self._docker()
        c = self._get(name)
        if new_name in self.containers:
            raise DockerError(f"rename {name} to {new_name}: Conflict. The container name \"/{new_name}\" is already in use")
        self._mutate(f"rename {name} {new_name}")
        c.fact = replace(c.fact, name=new_name)
        self.containers[new_name] = self.containers.pop(name)

    def image_volumes(self, image: str) -> tuple[str, ...] | None:
        self._docker()
        img = self.images.get(image)
        return None if img is None or image in self.pruned else img.volumes

    def _get(self, name: str) -> FakeContainer:
        c = self.containers.get(name)
        if c is None:
            raise DockerError(f"{name}: not found: No such container: {name}")
        return c

    def connections_to(self, host_port: int) -> int:
        return self.connections.get(host_port, 0)

    # Volumes, networks, one-offs and accessory checks ---------------------------------------------------------
    def list_volumes(self) -> set[str]:
        self._docker()
        return set(self.volumes)

    def create_volume(self, name: str, labels: dict[str, str]) -> None:
        self._docker()
        self._mutate(f"create volume {name}")
        self.volumes.setdefault(name, dict(labels))  # Docker: creating an existing volume is a no-op

    def list_networks(self) -> set[str]:
        self._docker()
        return set(self.networks)

    def create_network(self, name: str, labels: dict[str, str]) -> None:
        self._docker()
        if name in self.networks:
            raise DockerError(f"create network {name}: network with name {name} already exists")
        self._mutate(f"create network {name}")
        self.networks[name] = dict(labels)

    def connect_network(self, network: str, container: str, aliases: tuple[str, ...]) -> None:
        self._docker()
        c = self._get(container)
        if network not in self.networks:
            raise DockerError(f"connect {container} to {network}: network {network} not found")
        if network not in c.networks:
            self._mutate(f"connect {container} to {network}")
            c.networks.append(network)

    def run_oneoff(self, job: OneOff, timeout: float) -> OneOffResult:
        self._docker()
        self.ensure_image(job.image)
        old = self.containers.get(job.name)
        if old is not None:
            if LABEL_ONEOFF not in old.fact.labels:
                raise DockerError(f"{job.name}: a container of that name exists and is not a one-off of ours")
            self.remove_container(job.name)  # the leftover of a killed run
        answer = self.images[job.image].execs.get(tuple(job.command))
        if answer is None:
            raise DockerError(f"start {job.name}: {_missing_command(job.command)}")
        self._mutate(f"oneoff {job.name}")
        self.oneoffs.append(job)
        for vol in job.volumes:
            self.volumes.setdefault(vol, {})
        code, output = answer
        if code is None:
            self.clock += timeout
            return OneOffResult(None, f"timed out after {timeout:g}s")
        lines = [ln for ln in output.splitlines() if ln.strip()]
        return OneOffResult(code, one_line(lines[-1]) if lines else "")

    def check_command(self, name: str, argv: list[str], timeout: float) -> HealthResult:
        c = self.containers.get(name)
        if c is None or not self.docker_up:
            return HealthResult(False, f"exec in {name}: No such container: {name}")
        self._settle()
        if c.state != "running":
            return HealthResult(False, f"exec in {name}: Container {c.fact.id} is not running")
        if c.broken:
            return exec_result(1, "")
        answer = self.images.get(c.fact.image, FakeImage()).execs.get(tuple(argv))
        if answer is None:
            return exec_result(126, _missing_command(argv))
        code, output = answer
        if code is None:
            self.clock += timeout
            return HealthResult(False, f"timed out after {timeout:g}s")
        return exec_result(code, output)

    def _listener(self, name: str, network: str | None, host: str | None, port: int) -> tuple[str, FakeContainer | None]:
        """(the address a check connects to, the container that accepts there or None); ("", None): no address."""
        self._settle()
        if host is not None:
            for c in self.containers.values():
                cport = next((cp for cp, hp in c.ports.items() if hp == port and c.fact.host_ip == host), None)
                if cport is not None and c.state == "running":
                    return host, c if self._accepts(c, cport) else None
            return host, None
        named = self.containers.get(name)
        if named is None or named.state != "running" or (network is not None and network not in named.networks):
            return "", None
        return f"172.30.0.{int(named.fact.id, 16) % 250 + 2}", named if self._accepts(named, port) else None

    def _accepts(self, c: FakeContainer, port: int) -> bool:
        listens = self.images.get(c.fact.image, FakeImage()).listens
        return not c.broken and (listens is None or port in listens)

    def check_tcp(self, name: str, network: str | None, host: str | None, port: int, timeout: float) -> HealthResult:
        addr, c = self._listener(name, network, host, port)
        if not addr:
            return HealthResult(False, "no address")
        return HealthResult(True, f"{addr}:{port} accepts") if c is not None else HealthResult(False, f"{addr}:{port}: Connection refused")

    def check_http(self, name: str, network: str | None, host: str | None, port: int, path: str, expect: int, timeout: float) -> HealthResult:
        addr, c = self._listener(name, network, host, port)
        if not addr:
            return HealthResult(False, "no address")
        if c is None:
            return HealthResult(False, "connection refused")
        healthy = self._health_now(c)
        status = self.pages[path][0] if path in self.pages else 200 if healthy else 503
        if status != expect:
            return HealthResult(False, f"HTTP {status}")
        return HealthResult(True, f"HTTP {status}" + (" UP" if path not in self.pages else ""))

    # Host facts ----------------------------------------------------------------------------------------------

    def host_capacity(self, image: str, measure: tuple[str, ...], size_of: str | None) -> CapacityFact:
        self._docker()
        self._settle()
        if self.meminfo_missing:
            raise HostError("capacity check: cannot read /fake/meminfo: missing")
        present = image in self.images and image not in self.pruned  # a pruned image is pulled again
        ids = {c.fact.image_id for c in self.containers.values()} | set(self.images)
        return CapacityFact(
            mem_total=self.mem_total,
            # Like the kernel's: what running containers use is not available.
            mem_available=max(0, self.mem_available - self.container_memory * sum(c.fact.state == "running" for c in self.containers.values())),
            meminfo="/fake/meminfo",
            usage={n: self.container_memory for n in measure if n in self.containers and self.containers[n].state == "running"},
            image_present=present,
            image_size=self.image_size if size_of in ids and not present else None,
            docker_root="/var/lib/docker",
            disk_free=None if present else self.disk_free,
            cpus=self.cpus,
        )

    # HTTP ------------------------------------------------------------------------------------
    def probe_health(self, url: str, expect_status: int, timeout: float) -> HealthResult:
        self._settle()
        port = port_of(url.split("//", 1)[-1].split("/", 1)[0])
        for c in self.containers.values():
            if c.fact.state == "running" and c.fact.host_port == port:
                return HealthResult(True, "HTTP 200 UP") if self._health_now(c) else HealthResult(False, "HTTP 503")
        return HealthResult(False, "connection refused")

    def query_prometheus(self, url: str, query: str, timeout: float) -> PromAnswer:
        # Same answers as drivers/prometheus.py for what the fake can be: up (200 + a document) or refused.
        if "@" in url.split("//", 1)[-1].split("/", 1)[0]:
            return PromAnswer(None, "credentials in the Prometheus URL refused")
        self.prom_queries.append(query)
        if not self.prom_up:
            return PromAnswer(None, "connection refused")
        return prom_answer(self.prom_answers.get(query, {"status": "success", "data": {"resultType": "vector", "result": []}}))

    def probe_route(self, url: str, timeout: float) -> RouteProbe:
        if not self.nginx_up:
            return RouteProbe(False, "", f"GET {url}: connection refused")
        if (mm := _MAINTENANCE_URL.search(url)) is not None:
            on = self.maintenance_present(mm.group("app"))
            return RouteProbe(True, "", f"HTTP {503 if on else 204} via no upstream", 503 if on else 204)
        m = _ROUTE_URL.search(url)
        servers = self.routed(m.group("app")) if m else []
        if (pm := _PREVIEW_URL.search(url)) is not None:
            m, servers = pm, self.preview_routed(pm.group("app"))
        if not servers:
            # Like Nginx: an upstream whose servers are all down answers 502 and names itself in $upstream_addr.
            named = m.group("app") if m and m.group("app") in self.loaded else ""
            return RouteProbe(True, named, f"HTTP 502 via {named or 'no upstream'}", 502)
        return RouteProbe(True, servers[0], f"HTTP 200 via {servers[0]}", 200)

    # The access log ------------------------------------------------------------------------------
    def log_access(self, path: Path, *records: bytes, partial: bytes = b"") -> None:
        """What Nginx appends to its access log: whole records (a line each), then maybe a line being written."""
        inode, data = self.access_logs.get(path, (len(self.access_logs) + 1, b""))
        self.access_logs[path] = (inode, data + b"".join(r + b"\n" for r in records) + partial)

    def rotate_access_log(self, path: Path) -> None:
        """logrotate without a copy the reader finds: a new, empty log under the same name."""
        self.access_logs[path] = (max((i for i, _ in self.access_logs.values()), default=0) + 1, b"")

    def access_log_end(self, path: Path) -> LogPos:
        if path not in self.access_logs:
            return LogPos(0, 0)
        inode, data = self.access_logs[path]
        return LogPos(inode, len(data))

    def read_access_log(self, path: Path, pos: LogPos) -> LogRead:
        if path not in self.access_logs:
            return LogRead([], pos, f"{path.name} is missing or not a regular file")
        inode, data = self.access_logs[path]
        start = 0 if pos.inode and (inode != pos.inode or len(data) < pos.offset) else pos.offset
        cut = data.rfind(b"\n", start)
        if cut < 0:
            return LogRead([], LogPos(inode, start))  # nothing whole yet: a partial line waits for the next read
        return LogRead(data[start:cut].split(b"\n"), LogPos(inode, cut + 1))

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

    def preview_flag_present(self, app: str) -> bool:
        """The site's `if (-f <flagFile>.preview)` (spec.preview)."""
        if app in self.flag_files:
            return self.flag_files[app].with_name(self.flag_files[app].name + ".preview") in self.files
        return any(p.parent / f"{app}.green.preview" in self.files for p in self.include_paths)

    def maintenance_present(self, app: str) -> bool:
        """The site's `if (-f <flagFile>.maintenance)`: every public request answered 503 with the maintenance page."""
        if app in self.flag_files:
            return self.flag_files[app].with_name(self.flag_files[app].name + ".maintenance") in self.files
        return any(p.parent / f"{app}.green.maintenance" in self.files for p in self.include_paths)

    def preview_routed(self, app: str) -> list[str]:
        """Servers a request that asks for the preview reaches: the idle color's while the preview flag exists."""
        if not self.preview_flag_present(app):
            return self.routed(app)
        return self.loaded.get(f"{app}-blue" if self.flag_present(app) else f"{app}-green", [])
    # Deploy gates -----------------------------------------------------------------------------
    def _settle_hook(self, c: FakeContainer) -> None:
        if c.fact.state == "running" and c.started_at is not None and self.clock >= c.started_at + self.hook_seconds:
            c.fact = replace(c.fact, state="exited")

    def find_hook(self, labels: dict[str, str]) -> HookState | None:
        self._docker()
        self._settle()
        for c in self.containers.values():
            if c.command is not None and labels.items() <= c.fact.labels.items():
                code = c.exit_code if c.fact.state == "exited" else None
                return HookState(c.fact.name, c.fact.state, code, c.started_at)
        return None

    def create_hook(self, req: HookRequest) -> None:
        self._docker()
        if req.image not in self.images:
            raise ImageError(f"image {req.image} is not present locally and cannot be pulled: not found")
        if req.name in self.containers:
            raise DockerError(f"create {req.name}: Conflict. The container name is already in use")
        self._mutate(f"create {req.name}")
        self._next_id += 1
        fact = ContainerFact(
            name=req.name, id=f"{self._next_id:064x}", image=req.image, image_id=self.image_id_of(req.image),
            labels=dict(req.labels), state="created", host_ip=None, host_port=None, created=self.clock,
        )  # fmt: skip
        self.containers[req.name] = FakeContainer(fact, dict(req.env), None, restart_policy="no", command=list(req.command), networks=[req.network or "bridge"])

    def _start_hook(self, c: FakeContainer) -> None:
        assert c.command is not None
        c.exit_code, c.output = self.hook_script(c.command, c.env)
        c.fact = replace(c.fact, state="running")
        c.started_at = self.clock
        self.hook_runs.append(c.fact.name)

    def wait_hook(self, name: str, timeout: float) -> int | None:
        self._docker()
        c = self._get(name)
        self._settle()
        if c.fact.state == "running" and c.started_at is not None:
            self.sleep(max(0.0, min(timeout, c.started_at + self.hook_seconds - self.clock)))  # time passes like any wait
            self._settle()
        return c.exit_code if c.fact.state == "exited" else None

    def hook_logs(self, name: str) -> tuple[str, ...]:
        self._docker()
        return self._get(name).output[-HOOK_LOG_LINES_READ:]

    def probe_check(self, url: str, expect_status: int, body_contains: str | None, timeout: float) -> HealthResult:
        self._settle()
        hostport, _, path = url.split("//", 1)[-1].partition("/")
        port = port_of(hostport)
        for c in self.containers.values():
            if c.fact.state == "running" and c.fact.host_port == port and self._health_now(c):
                status, body = self.pages.get("/" + path, (200, c.fact.image))
                if status != expect_status:
                    return HealthResult(False, f"HTTP {status}, want {expect_status}")
                if body_contains is not None and body_contains not in body:
                    return HealthResult(False, f"HTTP {status} but the body ({len(body.encode())} bytes) lacks the expected text")
                return HealthResult(True, f"HTTP {status}")
        return HealthResult(False, "connection refused")

    def run_check(self, argv: list[str], env: dict[str, str], timeout: float) -> CommandResult:
        code, output = self.check_script(argv, env)
        return CommandResult(code, output)

    # Images (pruning): one image per reference, its id derived from the reference like a container's image_id.
    @staticmethod
    def image_id_of(reference: str) -> str:
        return f"sha256:{abs(hash(reference)):064x}"[:71]

    def list_images(self) -> list[ImageFact]:
        self._docker()
        return [ImageFact(self.image_id_of(ref), (ref,), img.created) for ref, img in self.images.items() if ref not in self.pruned]

    def image_obtainable(self, image: str) -> str | None:
        self._docker()  # `images` is what the registry has too: a pruned one is pulled again (ensure_image)
        return None if image in self.images else f"image {image} is not present locally and cannot be pulled: not found"

    def image_ids_in_use(self) -> frozenset[str]:
        self._docker()
        return frozenset(c.fact.image_id for c in self.containers.values())

    def remove_image(self, image_id: str) -> str | None:
        self._docker()
        refs = [ref for ref in self.images if ref not in self.pruned and self.image_id_of(ref) == image_id]
        if not refs:
            return None
        user = next((c for c in self.containers.values() if c.fact.image_id == image_id), None)
        if user is not None:  # like Docker without force: a container, running or stopped, keeps its image
            how = "cannot be forced) - image is being used by running" if user.state == "running" else "must be forced) - image is being used by stopped"
            return f"conflict: unable to delete {image_id[7:19]} ({how} container {user.fact.id[:12]}"
        self._mutate(f"remove image {image_id[:19]}")
        self.pruned.update(refs)
        return None

    def now(self) -> float:
        return self.clock + self.wall_step

    def monotonic(self) -> float:
        return self.clock - self.boot_at

    def boot_id(self) -> str:
        return f"boot-{self.boots}"

    def reboot(self, uptime: float) -> None:
        """A perturbation: the host booted again `uptime` seconds ago (its monotonic clock restarted; nothing else
        of the fake's, containers included, is touched: a test that wants them gone removes them)."""
        self.boots += 1
        self.boot_at = self.clock - uptime

    def step_wall(self, seconds: float) -> None:
        """A perturbation: the wall clock (`now`) steps by `seconds` (NTP, an operator); the monotonic clock does not."""
        self.wall_step += seconds

    def sleep(self, seconds: float) -> None:
        self.clock += seconds
