"""The boundary between the controller and the host: everything it reads or changes goes through `World`.

`drivers.host.HostWorld` is the real one (Docker SDK, httpx, files, subprocess); `testing.FakeWorld` is an
in-memory one for property tests. `tests/test_contract.py` runs the same assertions against both.
Methods raise only `controller.errors` exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from controller.facts import CapacityFact, ContainerFact, ImageFact

# PromAnswer is defined beside its parser (controller.verify); re-exported for World users.
from controller.verify import PromAnswer as PromAnswer


@dataclass(frozen=True)
class ContainerRequest:
    """Everything needed to create one color's container."""

    name: str
    image: str
    labels: dict[str, str]
    env: dict[str, str] = field(repr=False)  # may hold secrets: never printed
    container_port: int
    host_ip: str
    host_port: int
    network: str | None = None
    restart_policy: str = "unless-stopped"
    stop_timeout: int = 10
    # spec.resources (issue 14): None = no limit (Docker's default)
    memory: int | None = None  # bytes (--memory)
    memory_reservation: int | None = None  # bytes (--memory-reservation)
    nano_cpus: int | None = None  # CPUs x 10^9 (--cpus)
    pids_limit: int | None = None  # --pids-limit


@dataclass(frozen=True)
class HealthResult:
    ok: bool
    detail: str  # e.g. "200 UP", "503", "connection refused"


@dataclass(frozen=True)
class RunState:
    """A container's process as `docker inspect` reports it: tells a steady container from a crash loop."""

    running: bool
    restarting: bool  # exited, Docker will start it again (restart policy)
    started_at: float | None  # last (re)start, epoch seconds
    restart_count: int  # restarts by Docker since it was created or last started by hand


@dataclass(frozen=True)
class RouteProbe:
    reachable: bool
    upstream: str  # $upstream_addr as Nginx reported it, "" when unknown
    detail: str


@dataclass(frozen=True)
class HookRequest:
    """A hook's one-off container: the new image, its env and network, `command` as its entrypoint, no ports."""

    name: str
    image: str
    labels: dict[str, str]
    env: dict[str, str] = field(repr=False)  # may hold secrets: never printed
    command: list[str]
    network: str | None = None


@dataclass(frozen=True)
class HookState:
    """A hook container as `docker inspect` shows it."""

    name: str
    state: str  # created, running, exited, ...
    exit_code: int | None  # when exited
    started_at: float | None


@dataclass(frozen=True)
class CommandResult:
    exit_code: int | None  # None: killed at its timeout
    output: tuple[str, ...]  # last lines of stdout+stderr, bounded (not yet redacted)


HOOK_OUTPUT_LINES = 50  # lines of a hook's or check's output kept (and logged)
OUTPUT_CAP = 64 * 1024  # bytes of it read at most
# A check command's PATH: it sees nothing else of the controller's environment (root's: no credentials leak).
CHECK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class World(Protocol):
    # Docker
    def list_containers(self) -> list[ContainerFact]:
        """Every container carrying the bluegreen.app label, health not filled in. One daemon call."""
        ...

    def run_state(self, name: str) -> RunState | None:
        """One inspect of the container: running, restarting, StartedAt, RestartCount; None when it is gone."""
        ...

    def create_container(self, req: ContainerRequest) -> None:
        """Create and start; pulls the image first when it is missing locally."""
        ...

    def ensure_image(self, image: str) -> None:
        """Pull the image when it is missing locally (registry auth as configured); ImageError if it cannot be had."""
        ...

    def start_container(self, name: str) -> None: ...

    def stop_container(self, name: str, timeout: int) -> None: ...

    def remove_container(self, name: str) -> None: ...

    def connections_to(self, host_port: int) -> int:
        """Established TCP connections to this local port (to know when a drain is done)."""
        ...

    def host_capacity(self, image: str, measure: tuple[str, ...], size_of: str | None) -> CapacityFact:
        """The host's room for one more color: MemTotal/MemAvailable (/proc/meminfo, or the file BLUEGREEN_MEMINFO
        names), memory in use by the `measure` containers that run, whether `image` is present, the size of image
        `size_of`, free disk under Docker's root dir, Docker's CPU count. HostError when meminfo is unreadable."""
        ...

    # HTTP
    def probe_health(self, url: str, expect_status: int, timeout: float) -> HealthResult: ...

    def probe_route(self, url: str, timeout: float) -> RouteProbe: ...

    def query_prometheus(self, url: str, query: str, timeout: float) -> PromAnswer:
        """GET <url>/api/v1/query?query=..., bounded like probe_health, redirects never followed; never raises."""
        ...

    # Files and commands
    def read_file(self, path: Path) -> str | None: ...

    def write_file(self, path: Path, content: str, mode: int = 0o644) -> None:
        """Atomic: readers see the old content or the new, never a mix."""
        ...

    def remove_file(self, path: Path) -> None: ...

    def run(self, argv: list[str], timeout: float) -> None:
        """Run a command; raise NginxError with its output's last line when it fails."""
        ...

    # Deploy gates (spec.checks, spec.hooks)
    def find_hook(self, labels: dict[str, str]) -> HookState | None:
        """The container carrying all of `labels` (a hook's app, phase, revision), None when there is none."""
        ...

    def create_hook(self, req: HookRequest) -> None:
        """Create (not start) a hook container; pulls the image first when it is missing locally."""
        ...

    def wait_hook(self, name: str, timeout: float) -> int | None:
        """Its exit code once it has exited; None if it still runs after `timeout` seconds."""
        ...

    def hook_logs(self, name: str) -> tuple[str, ...]:
        """The last HOOK_OUTPUT_LINES lines of its output (stdout and stderr), at most OUTPUT_CAP bytes read."""
        ...

    def probe_check(self, url: str, expect_status: int, body_contains: str | None, timeout: float) -> HealthResult:
        """GET `url`, bounded like probe_health: ok when the status and (if given) the body text match."""
        ...

    def run_check(self, argv: list[str], env: dict[str, str], timeout: float) -> CommandResult:
        """Run a host command without a shell, with exactly `env`, killed (its process group) at `timeout`."""
        ...

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    # Images (pruning)
    def list_images(self) -> list[ImageFact]:
        """Every local image that has a name (tag or digest); dangling ones are left out. One daemon call."""
        ...

    def image_ids_in_use(self) -> frozenset[str]:
        """The image id of every container on the host: any app or none, running or stopped. One daemon call."""
        ...

    def remove_image(self, image_id: str) -> str | None:
        """Remove an image by id, never forced: None when it is removed or already gone; the daemon's reason
        when it refuses (a container uses it, another repository names it, a child image needs it)."""
        ...
