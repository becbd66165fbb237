"""Facts: what observation found, as plain immutable values the planner can reason about."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Annotated

from annotated_types import Interval

from controller.kernel.backoff import BackoffPolicy
from controller.kernel.document import MAX_INT, Alias, Epoch, Stored
from controller.spec.base import COLORS, Color
from controller.world.verification import Window

# Labels the controller puts on every container it creates.
LABEL_APP = "bluegreen.app"
LABEL_COLOR = "bluegreen.color"
LABEL_REVISION = "bluegreen.revision"
LABEL_MANAGED = "bluegreen.managed-by"
MANAGED_BY = "bluegreen-controller"
# Deploy-time revision input (`revision_extra` key) and its label: a hash of secret versions, never values.
FINGERPRINT_KEY = "secrets-fingerprint"
LABEL_FINGERPRINT = f"bluegreen.{FINGERPRINT_KEY}"
LABEL_HOOK = "bluegreen.hook"  # on a hook's one-off container: its phase (beforeSwitch, afterSwitch)
LABEL_HOOK_TIMEOUT = "bluegreen.hook-timeout"  # ... and its own timeoutSeconds, enforced whatever the spec says later
# A hook's LABEL_FINGERPRINT when its revision had no secrets (its output needs no secret registered to be shown).
NO_SECRETS = "none"
# A color's container name (<app>-blue|green): listed as an app's container even without our labels (a stranger's).
COLOR_CONTAINER_NAME = re.compile(r"^[a-z0-9-]+-(blue|green)$")
# Labels on an accessory's containers (issue 13).
LABEL_ACCESSORY = "bluegreen.accessory"
LABEL_ACCESSORY_IMAGE = "bluegreen.accessory.image"  # the spec's image reference (Docker lists the resolved one)
LABEL_CONFIG = "bluegreen.accessory.config"  # config hash, like an app color's revision
LABEL_FIELDS = "bluegreen.accessory.fields"  # field=hash,...: names what changed
LABEL_ONEOFF = "bluegreen.accessory.oneoff"  # a backup container (removed when it ends)
RETIRED_SUFFIX = "-retired"  # a recreate renames an accessory's old container so, until the new one has its volumes
_ANONYMOUS_VOLUME = re.compile(r"^[0-9a-f]{64}$")  # the name Docker gives a volume nobody named (an image's VOLUME)


@dataclass(frozen=True)
class ContainerFact:
    name: str
    id: str
    image: str  # reference the container was created from
    image_id: str
    labels: dict[str, str]
    state: str  # docker state: created, running, exited, ...
    host_ip: str | None  # where the container port is published
    host_port: int | None
    created: float = 0.0
    # Filled in by observation for running containers only.
    healthy: bool | None = None
    health_detail: str = ""
    started_at: float | None = None
    repo_digests: tuple[str, ...] = ()  # registry digests of the container's image (repo@sha256:...)
    # From `docker inspect`, filled in only for a running container that may get traffic and does not serve
    # (and for one that fails its check): None means not inspected. Docker resets the count on `docker start`.
    restart_count: int | None = None
    restarting: bool = False  # Docker is between two runs of a crashed container (restart policy)
    uptime: float | None = None  # its process's age when inspected, on the boot clock (RunState.uptime)

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def revision(self) -> str | None:
        return self.labels.get(LABEL_REVISION)

    @property
    def managed(self) -> bool:
        """Created by the controller (for some app; the caller checks which): its labels say so."""
        return self.labels.get(LABEL_MANAGED) == MANAGED_BY

    def ours(self, app: str) -> bool:
        """Created by the controller for `app`. Anything else under its names is never touched nor routed to."""
        return self.managed and self.labels.get(LABEL_APP) == app

    def steady(self, now: float, window: float) -> bool:
        """Has run without a restart for at least `window` seconds, as far as inspection shows.

        A restart moves StartedAt, so its age is the time since the last (re)start; a restart count above 0
        means Docker restarted it since it was created or last started by hand, i.e. since it was proven.
        StartedAt is wall time, which a forward step of the clock ages at once: the age on the boot clock, when
        inspection could read it, must say so too.
        """
        return (
            self.running
            and not self.restarting
            and self.restart_count == 0
            and self.started_at is not None
            and now - self.started_at >= window
            and (self.uptime is None or self.uptime >= window)
        )


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

    @property
    def running(self) -> bool:
        return self.state == "running"

    def anonymous_volumes(self, named: dict[str, str]) -> dict[str, str]:
        """Its anonymous volumes (an image's VOLUME, as Docker made them) -> path, but none a volume of `named`
        (spec.volumes: volume -> path) is mounted at: what a recreate mounts again at the same paths."""
        taken = set(named.values())
        return {v: path for v, path in self.mounts if is_anonymous(v) and v not in named and path not in taken}

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


def retired_name(accessory: str) -> str:
    return accessory + RETIRED_SUFFIX


def is_anonymous(volume: str) -> bool:
    return bool(_ANONYMOUS_VOLUME.match(volume))


@dataclass(frozen=True)
class RouteFact:
    """What Nginx really does, learned by sending a request through it."""

    reachable: bool
    color: Color | None = None  # color whose host port answered through Nginx
    upstream: str = ""  # raw $upstream_addr
    detail: str = ""
    status: int = 0  # the HTTP status of the answer (0: none)


@dataclass(frozen=True)
class CapacityFact:
    """What the host has for one more color (issue 14), observed just before a new color would start.

    Sizes in bytes; None where the host could not tell (the rule then skips that part and says so).
    """

    mem_total: int  # MemTotal of /proc/meminfo (or of the file BLUEGREEN_MEMINFO names)
    mem_available: int  # MemAvailable: what can be allocated without swapping
    meminfo: str  # the file read, shown in messages
    usage: dict[str, int] = field(default_factory=dict)  # container name -> memory in use now (running ones only)
    image_present: bool = True  # the image to start is in Docker's store (no pull needed)
    image_size: int | None = None  # size of the live color's image: the estimate of what a pull needs
    docker_root: str = ""  # Docker's DockerRootDir
    disk_free: int | None = None  # free under docker_root, root's reserve excluded (statvfs f_bavail); None: not visible here
    cpus: int | None = None  # CPUs Docker sees (docker info NCPU)


@dataclass(frozen=True)
class Observed:
    app: str
    containers: dict[Color, ContainerFact | None]
    include: str | None  # upstream include file content; None when missing
    route: RouteFact
    marker: str | None  # raw marker content; None when missing
    at: float
    flag: str | None = None  # nginx.switch: flag: the flag file's content; None when missing (blue serves)
    # spec.preview (controller/app/preview.py): the preview flag file, and where a request asking for the preview goes
    # (probed only while the spec has a preview or the flag exists).
    preview_flag: str | None = None
    preview_route: RouteFact | None = None
    # Maintenance (controller/app/rules/maintenance.py): the flag file's content (the message), and what the control server's
    # maintenance route answered (asked only while the flag exists).
    maintenance_flag: str | None = None
    maintenance_route: RouteFact | None = None
    hooks: tuple[ContainerFact, ...] = ()  # this app's hook containers (label bluegreen.hook), e.g. left by a kill -9
    capacity: CapacityFact | None = None  # observed only when a new color may start (controller/app/gather.py)
    # The color live now: what Nginx answered through, else what the files on disk route to (routing.serving_color).
    # Derived once, here, by observation; every rule reads it from here.
    serving: Color | None = None

    @property
    def marker_color(self) -> Color | None:
        v = (self.marker or "").strip()
        for c in COLORS:
            if v == c:
                return c
        return None


@dataclass(frozen=True)
class Failure(Stored):
    """A revision whose deploy failed; remembered so cron does not retry it every minute (memory.json "failures")."""

    revision: str
    color: Color
    count: Annotated[int, Interval(ge=1, le=MAX_INT)]
    last_failed_at: Epoch
    reason: str
    message: str
    # For a failed check or hook: the fingerprint of spec.checks/spec.hooks it failed with. They are not part of
    # the revision (they shape no container), so this is how a fix to them is "a spec change, tried at once".
    gates: str = ""

    def next_retry_at(self, policy: BackoffPolicy) -> float:
        """When the planner tries the revision again (cron and watch alike; watch requeues for this instant)."""
        return self.last_failed_at + policy.delay(self.count)


@dataclass(frozen=True)
class HookRecord(Stored):
    """That a hook ran for a revision (memory.json "hooks"): `state` running (started, no result yet),
    done (exit code known) or lost (its container vanished before a result). Output is redacted, bounded."""

    phase: str
    revision: str
    state: str
    started_at: Annotated[Epoch, Alias("startedAt")]
    exit_code: Annotated[int | None, Alias("exitCode"), Interval(ge=-(2**31), le=MAX_INT)] = None
    finished_at: Annotated[Epoch | None, Alias("finishedAt")] = None
    output: tuple[str, ...] = ()

    OMIT_NONE = frozenset({"finishedAt"})

    @property
    def key(self) -> str:
        return hook_key(self.phase, self.revision)

    @property
    def succeeded(self) -> bool:
        return self.state == "done" and self.exit_code == 0


def hook_key(phase: str, revision: str) -> str:
    return f"{phase}/{revision}"


@dataclass(frozen=True)
class Memory:
    """What the controller remembers between passes (state dir). Never a copy of the world."""

    failures: dict[str, Failure] = field(default_factory=dict)
    converged_generation: str | None = None
    hooks: dict[str, HookRecord] = field(default_factory=dict)  # hook_key(phase, revision) -> its last run
    verify: Window | None = None  # the last post-switch verification window (apps/<app>/verify.json)

    def bump(self, revision: str, color: Color, at: float, reason: str, message: str, *, gates: str | None = None) -> Memory:
        """`revision` failed (again) at `at`: its count grows by one. With `gates` (a failed check or hook: the
        fingerprint of the checks and hooks it failed with), a failure recorded with other gates counts from 0."""
        old = self.failures.get(revision)
        count = (old.count if old is not None and (gates is None or old.gates == gates) else 0) + 1
        failure = Failure(revision, color, count, at, reason, message, gates=gates or "")
        return replace(self, failures={**self.failures, revision: failure})

    def keep_failures(self, revisions: set[str]) -> Memory:
        """Only the failures of `revisions` (those the spec names and those a color runs: a handful, so bounded)."""
        return replace(self, failures={r: f for r, f in self.failures.items() if r in revisions})


_SERVER_RE = re.compile(r"^\s*server\s+([^\s;]+)\s*([^;]*);", re.MULTILINE)


def include_servers(content: str | None) -> list[str]:
    if content is None:
        return []
    body = "\n".join(line.split("#", 1)[0] for line in content.splitlines())
    return [m.group(1) for m in _SERVER_RE.finditer(body) if "down" not in m.group(2).split()]


def port_of(address: str) -> int | None:
    """Port of `host:port`, `[v6]:port`; None for anything else (unix sockets, names)."""
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return int(port)


def color_of_port(port: int | None, ports: dict[Color, int]) -> Color | None:
    for c, p in ports.items():
        if p == port:
            return c
    return None


# Images (pruning, controller/app/steps/prune.py) ------------------------------------------------------------------


@dataclass(frozen=True)
class ImageFact:
    """One local image with a name, as `docker image ls` lists it."""

    id: str  # sha256:...
    references: tuple[str, ...]  # every repo:tag and repo@sha256:... naming it (none: dangling, Docker's business)
    created: float  # epoch seconds, as Docker reports the image's creation


@dataclass(frozen=True)
class ImagesObserved:
    """What pruning is planned from: the named images, and the image of every container on the host."""

    images: tuple[ImageFact, ...]
    in_use: frozenset[str]  # image ids of every container, any app (or none), running or stopped
