"""The documents of the state dir, as typed records: status.json (`Status`, `Condition`, `LastDeploy`, ...) and
failover.json (`FailoverState`). JSON only at the edge (controller/kernel/document.py's `Document`); building a status
from an observation is controller/app/status.py's, tracking failover is controller/app/failover.py's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Annotated

from annotated_types import Interval

from controller.kernel.document import MAX_INT, TRUE_FALSE, After, Alias, Document, Epoch, Stored
from controller.kernel.elapsed import Elapsed
from controller.spec.base import COLORS, Color
from controller.world.actions import Blocker

if TYPE_CHECKING:  # the models load with the first spec validated (none on a spec-cache hit)
    from controller.spec.app import BlueGreenApp


# A condition's status: a bool here, "True" or "False" in JSON (as Kubernetes writes it).
TrueFalse = Annotated[bool, TRUE_FALSE]


@dataclass(frozen=True)
class Condition(Stored):
    type: str  # Ready, Progressing, Degraded, RollbackReady, SecretsStale
    status: TrueFalse
    reason: str
    message: str
    last_transition_time: Annotated[str, Alias("lastTransitionTime")] = ""  # set by build_status: when `status` last changed


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, kw_only=True)
class LastDeploy(Stored):
    """The last pass that deployed (created or started the wanted color, or switched to it); in memory.json.

    Fields in the order `--status --json` always printed them (as read back from the sorted memory.json)."""

    at: str
    color: Color
    from_color: Annotated[Color | None, Alias("from")]  # the color that served before
    image: str
    message: str | None
    outcome: str  # success | failed
    reconcile_id: Annotated[str, Alias("reconcileId")]
    revision: str


@dataclass(frozen=True)
class Limits(Stored):
    """spec.resources in status: the limits both colors are created with (only those set appear)."""

    memory: str | None = None
    memory_reservation: Annotated[str | None, Alias("memoryReservation")] = None
    cpus: Annotated[float | None, Interval(ge=0, le=1024)] = None
    pids_limit: Annotated[int | None, Alias("pidsLimit"), Interval(ge=1, le=MAX_INT)] = None

    OMIT_NONE = frozenset({"memory", "memoryReservation", "cpus", "pidsLimit"})

    @classmethod
    def of(cls, app: BlueGreenApp) -> Limits | None:
        r = app.spec.resources
        if r is None or not r.limits():
            return None
        return cls(r.memory, r.memoryReservation, r.cpus, r.pidsLimit)

    def describe(self) -> str:
        set_ = {"memory": self.memory, "memoryReservation": self.memory_reservation, "cpus": self.cpus, "pidsLimit": self.pids_limit}
        return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in set_.items() if v is not None)


@dataclass(frozen=True)
class Desired(Stored):
    image: str
    active_color: Annotated[Color, Alias("activeColor")]
    revision: str
    standby: str
    secrets: tuple[str, ...] | None = None  # secret env names with their SSM versions, never values
    resources: Limits | None = None  # spec.resources limits as written (issue 14); None when none is set

    OMIT_NONE = frozenset({"secrets", "resources"})


@dataclass(frozen=True, kw_only=True)
class ContainerStatus(Stored):
    name: str
    id: str  # short id
    image: str
    image_id: Annotated[str, Alias("imageId")]
    digest: str | None = None  # None only in files written before the digest was reported
    state: str
    running: bool
    healthy: bool | None
    health: str
    revision: str | None
    up_to_date: Annotated[bool, Alias("upToDate")]
    port: Annotated[int | None, Interval(ge=0, le=65535)]


@dataclass(frozen=True)
class RouteStatus(Stored):
    reachable: bool
    color: Color | None
    upstream: str
    detail: str


@dataclass(frozen=True)
class IncludeStatus(Stored):
    path: str
    present: bool
    color: Color | None
    managed: bool  # the include is one the controller renders (else: edited by hand)


@dataclass(frozen=True)
class MarkerStatus(Stored):
    path: str
    value: str | None


def _both_colors(containers: dict[Color, ContainerStatus | None]) -> dict[Color, ContainerStatus | None]:
    if set(containers) != set(COLORS):
        raise ValueError(f"not one entry for each of {', '.join(COLORS)}")
    return containers


@dataclass(frozen=True)
class ObservedStatus(Stored):
    # both colors, None when missing
    containers: Annotated[dict[Color, ContainerStatus | None], After(_both_colors)]
    route: RouteStatus
    include: IncludeStatus
    marker: MarkerStatus
    serving: Color | None


@dataclass(frozen=True)
class PlanStatus(Stored):
    actions: tuple[str, ...]  # described
    blockers: tuple[Blocker, ...]
    diffs: tuple[str, ...]


@dataclass(frozen=True)
class InvalidAt(Stored):
    """A newer commit at which an app's spec is invalid, and why."""

    commit: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class SourceStatus(Stored):
    """The git source an app's spec comes from (--git-url; controller/runtime/source.py): never credentials."""

    url: str
    ref: str
    path: str
    commit: str | None = None  # the commit the app's spec in force was read at
    author_date: Annotated[str | None, Alias("authorDate")] = None
    subject: str | None = None
    signer: str | None = None
    # the last commit fetched (differs from `commit` while it is refused)
    head: Annotated[str | None, Alias("headCommit")] = None
    last_fetch_ok_at: Annotated[str | None, Alias("lastFetchSuccessAt")] = None
    invalid: Annotated[InvalidAt | None, Alias("invalidAt")] = None


@dataclass(frozen=True)
class HookStatus(Stored):
    """status.json "hooks": one remembered hook run (controller/app/steps/gates.py), times as ISO 8601."""

    phase: str
    revision: str
    state: str
    exit_code: Annotated[int | None, Alias("exitCode"), Interval(ge=-(2**31), le=MAX_INT)]
    started_at: Annotated[str, Alias("startedAt")]
    finished_at: Annotated[str | None, Alias("finishedAt")]
    output: tuple[str, ...]


@dataclass(frozen=True)
class Status(Stored):
    """One app's status.json and `--status --json` entry: desired against observed, and conditions."""

    app: str
    generation: str
    observed_generation: Annotated[str, Alias("observedGeneration")]
    reconcile_id: Annotated[str, Alias("reconcileId")]  # "status" when built by --status
    updated_at: Annotated[str, Alias("updatedAt")]
    desired: Desired
    observed: ObservedStatus
    conditions: tuple[Condition, ...]
    plan: PlanStatus
    last_deploy: Annotated[LastDeploy | None, Alias("lastDeploy")] = None
    source: SourceStatus | None = None  # --git-url only
    hooks: tuple[HookStatus, ...] | None = None  # status.json only: the hook runs remembered, newest first

    OMIT_NONE = frozenset({"source", "hooks"})

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def is_true(self, type_: str) -> bool:
        c = self.condition(type_)
        return c is not None and c.status


# status.json, and each entry of `--status --json` (keys in the order they always had)
STATUS = Document(Status)


@dataclass(frozen=True)
class FailedOver(Stored):
    """An active failover: traffic moved from `from_color` to `to_color` while the spec was `generation`."""

    generation: str
    from_color: Annotated[Color, Alias("from")]
    to_color: Annotated[Color, Alias("to")]
    revision: str  # the revision routed to
    at: Epoch
    reason: str


@dataclass(frozen=True)
class FailoverState(Stored):
    """What the failover rule needs to remember between passes (failover.json)."""

    failing_color: Annotated[Color | None, Alias("failingColor")] = None
    failing_since: Annotated[Epoch | None, Alias("failingSince")] = None  # wall clock, shown
    # how long it has failed, on the monotonic clock (controller/kernel/elapsed.py): what failoverAfterSeconds judges
    failing_for: Annotated[Elapsed | None, Alias("failingFor")] = None
    served: dict[Color, str] = field(default_factory=dict)  # color -> revision it last served while passing
    active: FailedOver | None = None
    # A failover about to switch (saved before the switch runs): the next observation that finds traffic on its
    # `to_color` makes it `active`, whatever instant a kill -9 hit; one that does not drops it (issue 19 #5).
    switching: FailedOver | None = None

    OMIT_NONE = frozenset({"switching", "failingFor"})
    # Served revisions the failure memory held as failed (revision -> reason), for every app (failover on or not),
    # kept here as long as a color's last served revision is one (memory.json forgets a failure once no color runs
    # its revision and the spec names it no more).
    failed: dict[str, str] = field(default_factory=dict)


FAILOVER = Document(FailoverState)  # failover.json
