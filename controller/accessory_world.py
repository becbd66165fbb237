"""What the accessory loop reads and changes on the host (issue 13): containers by name, named volumes,
user-defined networks, one-off containers and in-container health checks.

`drivers/accessories.DockerAccessories` is the real one; `testing_accessories.FakeAccessoryWorld` the in-memory
one; `tests/test_accessory_contract.py` runs the same assertions against both. Methods raise only
`controller.errors` exceptions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

from controller.facts import LABEL_MANAGED, MANAGED_BY
from controller.world import HealthResult

LABEL_ACCESSORY = "bluegreen.accessory"
LABEL_CONFIG = "bluegreen.accessory.config"  # config hash, like an app color's revision
LABEL_FIELDS = "bluegreen.accessory.fields"  # field=hash,...: names what changed
LABEL_ONEOFF = "bluegreen.accessory.oneoff"  # a backup container (removed when it ends)
RETIRED_SUFFIX = "-retired"  # a recreate renames the old container so, until the new one has its volumes
_ANONYMOUS_VOLUME = re.compile(r"^[0-9a-f]{64}$")  # the name Docker gives a volume nobody named (an image's VOLUME)


def retired_name(accessory: str) -> str:
    return accessory + RETIRED_SUFFIX


def is_anonymous(volume: str) -> bool:
    return bool(_ANONYMOUS_VOLUME.match(volume))


@dataclass(frozen=True)
class AccessoryFact:
    """A container that has an accessory's name or label, as Docker lists it."""

    name: str
    id: str
    image: str
    labels: dict[str, str]
    state: str  # created, running, exited, restarting, ...
    networks: tuple[str, ...] = ()
    mounts: tuple[tuple[str, str], ...] = ()  # (volume name, path in the container) of each volume mounted

    def anonymous_volumes(self, named: dict[str, str]) -> dict[str, str]:
        """Its anonymous volumes (an image's VOLUME, as Docker made them) -> path, but none a volume of `named`
        (spec.volumes: volume -> path) is mounted at: what a recreate mounts again at the same paths."""
        taken = set(named.values())
        return {v: path for v, path in self.mounts if is_anonymous(v) and v not in named and path not in taken}

    @property
    def running(self) -> bool:
        return self.state == "running"

    def ours(self, accessory: str) -> bool:
        """Created by the controller for this accessory (its labels say so); anything else is never touched."""
        return self.labels.get(LABEL_MANAGED) == MANAGED_BY and self.labels.get(LABEL_ACCESSORY) == accessory

    @property
    def config(self) -> str | None:
        return self.labels.get(LABEL_CONFIG)

    def fields(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in self.labels.get(LABEL_FIELDS, "").split(","):
            k, sep, v = part.partition("=")
            if sep:
                out[k] = v
        return out


@dataclass(frozen=True)
class AccessoryRequest:
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


class AccessoryWorld(Protocol):
    def list_accessories(self, names: frozenset[str]) -> list[AccessoryFact]:
        """Containers labelled bluegreen.accessory, and any container named as one of `names` (to tell a stranger)."""
        ...

    def list_volumes(self) -> set[str]: ...

    def create_volume(self, name: str, labels: dict[str, str]) -> None: ...

    def list_networks(self) -> set[str]: ...

    def create_network(self, name: str, labels: dict[str, str]) -> None: ...

    def connect_network(self, network: str, container: str, aliases: tuple[str, ...]) -> None:
        """Join a container to a network (no-op when already joined)."""
        ...

    def create_accessory(self, req: AccessoryRequest) -> None:
        """Create and start; pulls the image first when it is missing locally."""
        ...

    def start(self, name: str) -> None: ...

    def stop(self, name: str, timeout: int) -> None: ...

    def remove(self, name: str) -> None:
        """Remove the container only (never its volumes)."""
        ...

    def rename(self, name: str, new_name: str) -> None: ...

    def image_volumes(self, image: str) -> tuple[str, ...] | None:
        """The paths `image` declares as VOLUME, sorted; None when the image is not present locally (not pulled)."""
        ...

    def run_oneoff(self, job: OneOff, timeout: float) -> OneOffResult: ...

    def check_command(self, name: str, argv: list[str], timeout: float) -> HealthResult: ...

    def check_tcp(self, name: str, network: str | None, host: str | None, port: int, timeout: float) -> HealthResult:
        """Connect to `host:port` (a published port) or, when host is None, to the container's address on `network`."""
        ...

    def check_http(self, name: str, network: str | None, host: str | None, port: int, path: str, expect: int, timeout: float) -> HealthResult: ...

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...
