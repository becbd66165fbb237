"""The boundary between the controller and the host: everything it reads or changes goes through `World`.

One protocol for both kinds (apps' colors and accessories are both containers: one set of container
operations, two request shapes), the access log, Prometheus and the host's capacity.
`drivers.host.HostWorld` is the real one (Docker SDK, httpx, files, subprocess); `testing.FakeWorld` is an
in-memory one for property tests. `tests/test_contract.py` calls every method on both with the same
assertions (and fails when a method is not called). Methods raise only `controller.kernel.errors` exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from controller.kernel.errors import one_line
from controller.spec.base import CHECK_PATH as CHECK_PATH  # re-exported: the drivers run checks with it
from controller.world.facts import AccessoryFact, CapacityFact, ContainerFact, ImageFact

# PromAnswer is defined beside its parser, LogPos beside the window that keeps it (controller.world.verification);
# re-exported for World users.
from controller.world.verification import LogPos as LogPos
from controller.world.verification import PromAnswer as PromAnswer


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
class AccessoryRequest:
    """Everything needed to create an accessory's container: any ports, named volumes, a network alias."""

    name: str
    image: str
    labels: dict[str, str]
    env: dict[str, str] = field(repr=False)  # may hold secrets: never printed
    ports: dict[int, int]  # container port -> host port
    host_ip: str
    volumes: dict[str, str]  # volume -> container path
    command: list[str] | None
    network: str | None
    aliases: tuple[str, ...] = ()
    restart_policy: str = "unless-stopped"


@dataclass(frozen=True)
class OneOff:
    """A one-off container of `image` with `volumes` mounted, removed when it ends (a backup)."""

    name: str
    image: str
    command: list[str]
    volumes: dict[str, str]
    labels: dict[str, str]
    env: dict[str, str] = field(repr=False)
    network: str | None = None


@dataclass(frozen=True)
class OneOffResult:
    exit_code: int | None  # None: timed out (the container was removed)
    output: str  # last line of its output, one line


@dataclass(frozen=True)
class LogRead:
    lines: list[bytes]  # whole lines only (one record each)
    pos: LogPos
    note: str = ""  # why nothing could be read (shown with the figures), "" when all went well


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
    # How long its process has run when inspected, on the host's boot clock, which a wall-clock step (NTP, an
    # operator) does not move, unlike StartedAt; None when unknown (not running, /proc unreadable).
    uptime: float | None = None


@dataclass(frozen=True)
class RouteProbe:
    reachable: bool
    upstream: str  # $upstream_addr as Nginx reported it, "" when unknown
    detail: str
    status: int = 0  # the HTTP status Nginx answered with (0: no answer)


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


def exec_result(code: int | None, output: str) -> HealthResult:
    """A command's health answer as both worlds word it: ok on exit 0, "exit <code>: <first output line>"."""
    text = one_line(output, 120)
    return HealthResult(code == 0, f"exit {code}: {text}" if text else f"exit {code}")


HOOK_OUTPUT_LINES = 50  # lines of a hook's or check's output kept (and logged)
# Lines of a hook's output read (within OUTPUT_CAP bytes): more than are kept, so that a multi-line secret that
# begins above the kept lines is still in the text redacted as a whole before the cut.
HOOK_LOG_LINES_READ = 2000
OUTPUT_CAP = 64 * 1024  # bytes of it read at most
# A check command's PATH: it sees nothing else of the controller's environment (root's: no credentials leak).


class World(Protocol):
    # Containers: an app's colors, hooks and accessories alike --------------------------------------------------
    def list_containers(self) -> list[ContainerFact]:
        """Every container carrying the bluegreen.app label or a color's name, health not filled in. One daemon call."""
        ...

    def list_accessories(self, names: frozenset[str]) -> list[AccessoryFact]:
        """Containers labelled bluegreen.accessory, and any container named as one of `names` (to tell a stranger);
        one-offs are left out. One daemon call."""
        ...

    def run_state(self, name: str) -> RunState | None:
        """One inspect of the container: running, restarting, StartedAt, RestartCount; None when it is gone."""
        ...

    def create_container(self, req: ContainerRequest | AccessoryRequest) -> None:
        """Create and start (a color's or an accessory's container); pulls the image first when it is missing
        locally. DockerError for a taken name, a missing network, a port in use; nothing half-made is left."""
        ...

    def ensure_image(self, image: str) -> None:
        """Pull the image when it is missing locally (registry auth as configured); ImageError if it cannot be had."""
        ...

    def start_container(self, name: str) -> None: ...

    def stop_container(self, name: str, timeout: int) -> None: ...

    def remove_container(self, name: str) -> None:
        """Remove the container (never a volume, an anonymous one neither); removing one that is gone is not an error."""
        ...

    def rename_container(self, name: str, new_name: str) -> None: ...

    def image_volumes(self, image: str) -> tuple[str, ...] | None:
        """The paths `image` declares as VOLUME, sorted; None when the image is not present locally (not pulled)."""
        ...

    def connections_to(self, host_port: int) -> int:
        """Established TCP connections to this local port (to know when a drain is done)."""
        ...

    # Volumes, networks, one-offs and accessory checks --------------------------------------------------------
    def list_volumes(self) -> set[str]: ...

    def create_volume(self, name: str, labels: dict[str, str]) -> None:
        """Create a named volume (creating an existing one is a no-op). Volumes are never removed."""
        ...

    def list_networks(self) -> set[str]: ...

    def create_network(self, name: str, labels: dict[str, str]) -> None:
        """Create a bridge network; DockerError when one of that name exists."""
        ...

    def connect_network(self, network: str, container: str, aliases: tuple[str, ...]) -> None:
        """Join a container to a network (no-op when already joined)."""
        ...

    def run_oneoff(self, job: OneOff, timeout: float) -> OneOffResult:
        """Run a one-off container to its end (removed afterwards, also at the timeout); DockerError when it
        cannot start (e.g. its command does not exist)."""
        ...

    def check_command(self, name: str, argv: list[str], timeout: float) -> HealthResult:
        """`argv` run inside the running container `name`: ok on exit 0 (`exec_result` words it)."""
        ...

    def check_tcp(self, name: str, network: str | None, host: str | None, port: int, timeout: float) -> HealthResult:
        """Connect to `host:port` (a published port) or, when host is None, to the container's address on `network`."""
        ...

    def check_http(self, name: str, network: str | None, host: str | None, port: int, path: str, expect: int, timeout: float) -> HealthResult:
        """GET `path` at the address `check_tcp` would connect to, bounded like probe_health."""
        ...

    # Host facts -------------------------------------------------------------------------------------------
    def host_capacity(self, image: str, measure: tuple[str, ...], size_of: str | None) -> CapacityFact:
        """The host's room for one more color: MemTotal/MemAvailable (/proc/meminfo, or the file BLUEGREEN_MEMINFO
        names), memory in use by the `measure` containers that run, whether `image` is present, the size of image
        `size_of`, free disk under Docker's root dir, Docker's CPU count. HostError when meminfo is unreadable."""
        ...

    # HTTP -------------------------------------------------------------------------------------------------
    def probe_health(self, url: str, expect_status: int, timeout: float) -> HealthResult: ...

    def probe_route(self, url: str, timeout: float) -> RouteProbe: ...

    def query_prometheus(self, url: str, query: str, timeout: float) -> PromAnswer:
        """GET <url>/api/v1/query?query=..., bounded like probe_health, redirects never followed; never raises."""
        ...

    # The access log (post-switch verification) -------------------------------------------------------------
    def access_log_end(self, path: Path) -> LogPos:
        """The position at the end of Nginx's access log now (the switch's): what follows is the new color's.
        LogPos(0, 0) when there is no log; HostError for an untrusted directory."""
        ...

    def read_access_log(self, path: Path, pos: LogPos) -> LogRead:
        """The whole lines logged since `pos` (across a rotation) and the position after them; a partial last
        line is left for the next read. HostError for an untrusted directory."""
        ...

    # Files and commands -------------------------------------------------------------------------------------
    def read_file(self, path: Path) -> str | None: ...

    def write_file(self, path: Path, content: str, mode: int = 0o644) -> None:
        """Atomic: readers see the old content or the new, never a mix."""
        ...

    def remove_file(self, path: Path) -> None: ...

    def run(self, argv: list[str], timeout: float) -> None:
        """Run a command; raise NginxError with its output's last line when it fails."""
        ...

    # Deploy gates (spec.checks, spec.hooks) -----------------------------------------------------------------
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
        """The end of its output (stdout and stderr): its last HOOK_LOG_LINES_READ lines, at most OUTPUT_CAP bytes,
        whole lines only. The caller redacts them as one text, then keeps HOOK_OUTPUT_LINES."""
        ...

    def probe_check(self, url: str, expect_status: int, body_contains: str | None, timeout: float) -> HealthResult:
        """GET `url`, bounded like probe_health: ok when the status and (if given) the body text match."""
        ...

    def run_check(self, argv: list[str], env: dict[str, str], timeout: float) -> CommandResult:
        """Run a host command without a shell, with exactly `env`, killed (its process group) at `timeout`."""
        ...

    # Images (pruning) ---------------------------------------------------------------------------------------
    def list_images(self) -> list[ImageFact]:
        """Every local image that has a name (tag or digest); dangling ones are left out. One daemon call."""
        ...

    def image_obtainable(self, image: str) -> str | None:
        """None when `image` is present locally or its registry has it (asked, not pulled: with the pull's
        credentials); else why it cannot be had (`reconcile releases`: whether a release can be rolled back to)."""
        ...

    def image_ids_in_use(self) -> frozenset[str]:
        """The image id of every container on the host: any app or none, running or stopped. One daemon call."""
        ...

    def remove_image(self, image_id: str) -> str | None:
        """Remove an image by id, never forced: None when it is removed or already gone; the daemon's reason
        when it refuses (a container uses it, another repository names it, a child image needs it)."""
        ...

    # Clock --------------------------------------------------------------------------------------------------
    def now(self) -> float:
        """The wall clock (epoch seconds): for what is shown and stored as a time, never for a duration."""
        ...

    def monotonic(self) -> float:
        """A clock no wall-clock step moves (CLOCK_MONOTONIC: system-wide, so comparable across runs of one boot):
        every duration and deadline the controller judges (a verification window, failing-since)."""
        ...

    def boot_id(self) -> str:
        """This boot of the host ("" when unknown): `monotonic` readings of two boots are not comparable."""
        ...

    def sleep(self, seconds: float) -> None: ...
