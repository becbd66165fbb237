"""`FakeAccessoryWorld`: an in-memory `AccessoryWorld` (issue 13) for planner and property tests.

It mirrors `drivers/accessories.DockerAccessories` as `tests/test_accessory_contract.py` checks: a create
refuses a taken name or a missing network, removing a container leaves its volumes, a one-off's exit code is
what its command says, health is what the test sets. Data written "into" a volume lives in `volume_data`, so a
test can see that a recreate kept it. An image's VOLUMEs are in `images` (set by a test; an image is "pulled"
with none when a container is created from it): a create mounts a new anonymous volume at each path no
requested volume covers, as Docker does.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from controller.accessory_world import LABEL_ACCESSORY, AccessoryFact, AccessoryRequest, OneOff, OneOffResult
from controller.errors import DockerError
from controller.world import HealthResult


@dataclass
class FakeAccessory:
    req: AccessoryRequest | None  # None: a stranger's container (created by a test, not by the controller)
    labels: dict[str, str]
    image: str
    state: str = "running"
    networks: list[str] = field(default_factory=list)
    mounts: dict[str, str] = field(default_factory=dict)  # volume -> path


class FakeAccessoryWorld:
    def __init__(self) -> None:
        self.containers: dict[str, FakeAccessory] = {}
        self.volumes: dict[str, dict[str, str]] = {}  # volume -> labels
        self.volume_data: dict[str, str] = {}  # volume -> what a test "wrote" into it
        self.networks: dict[str, dict[str, str]] = {"bridge": {}}
        self.healthy: dict[str, bool] = {}  # container -> health answer (default True)
        self.oneoff_exit: int | None = 0  # exit code of the next one-off (None: it times out)
        self.oneoffs: list[OneOff] = []
        self.calls: list[str] = []
        self.clock = 1_000_000.0
        self.images: dict[str, tuple[str, ...]] = {}  # images present locally -> the paths they declare as VOLUME
        self._anonymous = 0

    # Test helpers
    def add_stranger(self, name: str, image: str = "other:1") -> None:
        self.containers[name] = FakeAccessory(None, {}, image)

    def kill(self, name: str) -> None:
        self.containers[name].state = "exited"

    # AccessoryWorld
    def list_accessories(self, names: frozenset[str]) -> list[AccessoryFact]:
        return [
            AccessoryFact(n, f"id-{n}", c.image, dict(c.labels), c.state, tuple(sorted(c.networks)), tuple(sorted(c.mounts.items())))
            for n, c in sorted(self.containers.items())
            if LABEL_ACCESSORY in c.labels or n in names
        ]

    def list_volumes(self) -> set[str]:
        return set(self.volumes)

    def create_volume(self, name: str, labels: dict[str, str]) -> None:
        self.calls.append(f"create_volume {name}")
        self.volumes.setdefault(name, dict(labels))  # Docker: creating an existing volume is a no-op

    def list_networks(self) -> set[str]:
        return set(self.networks)

    def create_network(self, name: str, labels: dict[str, str]) -> None:
        self.calls.append(f"create_network {name}")
        if name in self.networks:
            raise DockerError(f"create network {name}: network with name {name} already exists")
        self.networks[name] = dict(labels)

    def connect_network(self, network: str, container: str, aliases: tuple[str, ...]) -> None:
        if network not in self.networks:
            raise DockerError(f"connect {container} to {network}: network {network} not found")
        c = self.containers.get(container)
        if c is None:
            raise DockerError(f"connect {container} to {network}: No such container: {container}")
        if network not in c.networks:
            c.networks.append(network)

    def create_accessory(self, req: AccessoryRequest) -> None:
        self.calls.append(f"create {req.name}")
        if req.name in self.containers:
            raise DockerError(f"create {req.name}: Conflict. The container name \"/{req.name}\" is already in use")
        if req.network is not None and req.network not in self.networks:
            raise DockerError(f"create {req.name}: network {req.network} not found")
        for vol in req.volumes:
            self.volumes.setdefault(vol, {})  # Docker creates a missing named volume on mount
        mounts = dict(req.volumes)
        for path in self.images.setdefault(req.image, ()):  # "pulled"
            if path not in mounts.values():  # an image's VOLUME no requested volume covers: a new anonymous one
                self._anonymous += 1
                vol = hashlib.sha256(f"anonymous-{self._anonymous}".encode()).hexdigest()
                self.volumes[vol] = {}
                mounts[vol] = path
        self.containers[req.name] = FakeAccessory(req, dict(req.labels), req.image, "running", [req.network or "bridge"], mounts)

    def _get(self, name: str, what: str) -> FakeAccessory:
        c = self.containers.get(name)
        if c is None:
            raise DockerError(f"{what} {name}: No such container: {name}")
        return c

    def start(self, name: str) -> None:
        self.calls.append(f"start {name}")
        self._get(name, "start").state = "running"

    def stop(self, name: str, timeout: int) -> None:
        self.calls.append(f"stop {name}")
        self._get(name, "stop").state = "exited"

    def remove(self, name: str) -> None:
        self.calls.append(f"remove {name}")
        self.containers.pop(name, None)  # volumes stay

    def rename(self, name: str, new_name: str) -> None:
        self.calls.append(f"rename {name} {new_name}")
        self._get(name, "rename")
        if new_name in self.containers:
            raise DockerError(f"rename {name} to {new_name}: Conflict. The container name \"/{new_name}\" is already in use")
        self.containers[new_name] = self.containers.pop(name)

    def image_volumes(self, image: str) -> tuple[str, ...] | None:
        return self.images.get(image)

    def run_oneoff(self, job: OneOff, timeout: float) -> OneOffResult:
        self.calls.append(f"oneoff {job.name}")
        self.oneoffs.append(job)
        for vol in job.volumes:
            self.volumes.setdefault(vol, {})
        code = self.oneoff_exit
        return OneOffResult(code, "timed out" if code is None else f"exit {code}")

    def check_command(self, name: str, argv: list[str], timeout: float) -> HealthResult:
        return self._health(name)

    def check_tcp(self, name: str, network: str | None, host: str | None, port: int, timeout: float) -> HealthResult:
        return self._health(name)

    def check_http(self, name: str, network: str | None, host: str | None, port: int, path: str, expect: int, timeout: float) -> HealthResult:
        return self._health(name)

    def _health(self, name: str) -> HealthResult:
        c = self.containers.get(name)
        if c is None or c.state != "running":
            return HealthResult(False, "not running")
        ok = self.healthy.get(name, True)
        return HealthResult(ok, "ok" if ok else "exit 1")

    def now(self) -> float:
        return self.clock

    def sleep(self, seconds: float) -> None:
        self.clock += seconds
