"""`HostWorld`: the real `World`, composed of the Docker (containers, accessories, gates, capacity), probe,
Prometheus, access-log and file drivers.

The drivers a no-op pass of an app does not need (accessories, capacity, deploy gates, Prometheus, the access log)
are imported at their first use: a cron run pays only for what it uses.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from controller.drivers.containers import DockerDriver
from controller.drivers.probes import Prober
from controller.kernel import files
from controller.kernel.errors import NginxError
from controller.world.facts import AccessoryFact, CapacityFact, ContainerFact, ImageFact
from controller.world.protocol import (
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
)

if TYPE_CHECKING:
    from controller.drivers.accessories import DockerAccessories
    from controller.drivers.prometheus import PromClient


class HostWorld:
    def __init__(self, docker_url: str | None = None) -> None:
        self.docker = DockerDriver(docker_url)
        self.probes = Prober()
        self._accessories: DockerAccessories | None = None
        self._prometheus: PromClient | None = None
        self._boot: str | None = None  # boot_id(), read once

    @property
    def accessories(self) -> DockerAccessories:
        if self._accessories is None:
            from controller.drivers.accessories import DockerAccessories

            self._accessories = DockerAccessories(self.docker, self.probes)
        return self._accessories

    @property
    def prometheus(self) -> PromClient:
        if self._prometheus is None:
            from controller.drivers.prometheus import PromClient

            self._prometheus = PromClient(self.probes)  # the one HTTP client
        return self._prometheus

    def close(self) -> None:
        self.probes.close()

    # Containers
    def list_containers(self) -> list[ContainerFact]:
        return self.docker.list_containers()

    def list_accessories(self, names: frozenset[str]) -> list[AccessoryFact]:
        return self.accessories.list_accessories(names)

    def run_state(self, name: str) -> RunState | None:
        return self.docker.run_state(name)

    def create_container(self, req: ContainerRequest | AccessoryRequest) -> None:
        if isinstance(req, AccessoryRequest):
            self.accessories.create(req)
        else:
            self.docker.create(req)

    def ensure_image(self, image: str) -> None:
        self.docker.ensure_image(image)

    def start_container(self, name: str) -> None:
        self.docker.start(name)

    def stop_container(self, name: str, timeout: int) -> None:
        self.docker.stop(name, timeout)

    def remove_container(self, name: str) -> None:
        self.docker.remove(name)  # force=True, v=False: no volume goes with it, an anonymous one neither

    def rename_container(self, name: str, new_name: str) -> None:
        self.accessories.rename(name, new_name)

    def image_volumes(self, image: str) -> tuple[str, ...] | None:
        return self.accessories.image_volumes(image)

    def connections_to(self, host_port: int) -> int:
        return established_connections(host_port)

    # Volumes, networks, one-offs and accessory checks (controller/drivers/accessories.py)
    def list_volumes(self) -> set[str]:
        return self.accessories.list_volumes()

    def create_volume(self, name: str, labels: dict[str, str]) -> None:
        self.accessories.create_volume(name, labels)

    def list_networks(self) -> set[str]:
        return self.accessories.list_networks()

    def create_network(self, name: str, labels: dict[str, str]) -> None:
        self.accessories.create_network(name, labels)

    def connect_network(self, network: str, container: str, aliases: tuple[str, ...]) -> None:
        self.accessories.connect_network(network, container, aliases)

    def run_oneoff(self, job: OneOff, timeout: float) -> OneOffResult:
        return self.accessories.run_oneoff(job, timeout)

    def check_command(self, name: str, argv: list[str], timeout: float) -> HealthResult:
        return self.accessories.check_command(name, argv, timeout)

    def check_tcp(self, name: str, network: str | None, host: str | None, port: int, timeout: float) -> HealthResult:
        return self.accessories.check_tcp(name, network, host, port, timeout)

    def check_http(self, name: str, network: str | None, host: str | None, port: int, path: str, expect: int, timeout: float) -> HealthResult:
        return self.accessories.check_http(name, network, host, port, path, expect, timeout)

    # Host facts
    def host_capacity(self, image: str, measure: tuple[str, ...], size_of: str | None) -> CapacityFact:
        from controller.drivers import capacity

        return capacity.host_capacity(self.docker, image, measure, size_of)

    # HTTP
    def probe_health(self, url: str, expect_status: int, timeout: float) -> HealthResult:
        return self.probes.health(url, expect_status, timeout)

    def probe_route(self, url: str, timeout: float) -> RouteProbe:
        return self.probes.route(url, timeout)

    def query_prometheus(self, url: str, query: str, timeout: float) -> PromAnswer:
        return self.prometheus.query(url, query, timeout)

    # The access log (controller/drivers/accesslog.py: rotation, partial lines, no link or FIFO followed)
    def access_log_end(self, path: Path) -> LogPos:
        from controller.drivers import accesslog

        return accesslog.end(path)

    def read_access_log(self, path: Path, pos: LogPos) -> LogRead:
        from controller.drivers import accesslog

        return accesslog.read_since(path, pos)

    # Files and commands
    def read_file(self, path: Path) -> str | None:
        # A regular file of at most 64 KiB, else files.Garbage ("": replaced by the next write, never echoed).
        return files.read_text(path, files.SMALL)

    def write_file(self, path: Path, content: str, mode: int = 0o644) -> None:
        files.write_atomic(path, content, mode)

    def remove_file(self, path: Path) -> None:
        files.remove(path)

    def run(self, argv: list[str], timeout: float) -> None:
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
        except FileNotFoundError as e:
            raise NginxError(f"{argv[0]}: command not found") from e
        except subprocess.TimeoutExpired as e:
            raise NginxError(f"{' '.join(argv)}: timed out after {timeout:g}s") from e
        except OSError as e:
            raise NginxError(f"{' '.join(argv)}: {e.strerror}") from e
        if p.returncode != 0:
            lines = [ln for ln in (p.stderr + "\n" + p.stdout).splitlines() if ln.strip()]
            tail = next((ln for ln in reversed(lines) if "emerg" in ln or "error" in ln), lines[-1] if lines else "")
            raise NginxError(f"{' '.join(argv)} failed (exit {p.returncode}): {tail.strip()[:300]}")

    # Deploy gates (controller/drivers/gates.py)
    def find_hook(self, labels: dict[str, str]) -> HookState | None:
        from controller.drivers import gates

        return gates.find_hook(self.docker, labels)

    def create_hook(self, req: HookRequest) -> None:
        from controller.drivers import gates

        gates.create_hook(self.docker, req)

    def wait_hook(self, name: str, timeout: float) -> int | None:
        from controller.drivers import gates

        return gates.wait_hook(self.docker, name, timeout)

    def hook_logs(self, name: str) -> tuple[str, ...]:
        from controller.drivers import gates

        return gates.hook_logs(self.docker, name)

    def probe_check(self, url: str, expect_status: int, body_contains: str | None, timeout: float) -> HealthResult:
        return self.probes.check(url, expect_status, body_contains, timeout)

    def run_check(self, argv: list[str], env: dict[str, str], timeout: float) -> CommandResult:
        from controller.drivers import gates

        return gates.run_check(argv, env, timeout)

    # Images (pruning)
    def list_images(self) -> list[ImageFact]:
        return self.docker.list_images()

    def image_obtainable(self, image: str) -> str | None:
        return self.docker.image_obtainable(image)

    def image_ids_in_use(self) -> frozenset[str]:
        return self.docker.image_ids_in_use()

    def remove_image(self, image_id: str) -> str | None:
        return self.docker.remove_image(image_id)

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def boot_id(self) -> str:
        if self._boot is None:
            try:
                with open("/proc/sys/kernel/random/boot_id", "rb") as f:
                    self._boot = f.read(64).decode("ascii", "replace").strip()
            except OSError:
                self._boot = ""
        return self._boot

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def established_connections(port: int) -> int:
    """Count ESTABLISHED TCP connections whose local port is `port` (IPv4 and IPv6), from /proc."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) > 3 and fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        count += 1
        except FileNotFoundError:
            continue
    return count
