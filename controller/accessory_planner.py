"""The accessory planner (issue 13): pure, from observed facts to the steps that make one accessory true.

- missing -> its network and volumes first, then create, then wait healthy;
- stopped (ours) -> start, wait healthy;
- out of date (its config hash label differs) -> `update: manual`: blocker AccessoryOutdated naming the change
  and the remedy, nothing touched; `update: recreate`: backup (must succeed), stop with the grace period,
  remove the container (never a volume), create, wait healthy;
- a container with the accessory's name that the controller did not create -> blocker, never touched.

Every step is idempotent against a re-observation, so a pass killed anywhere (even between the stop and the
create of a recreate) leaves a world the next pass completes: a stopped old container is still out of date,
a removed one is missing; the volume is never an action's object except to create it when absent.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.accessory import CONFIG_FIELDS, Accessory
from controller.actions import Blocker
from controller.facts import AccessoryFact


@dataclass(frozen=True)
class Step:
    """One step of an accessory's plan; `verb` names it in --plan, history and logs."""

    verb: str  # EnsureNetwork EnsureVolume Backup StopAccessory RemoveAccessory CreateAccessory StartAccessory WaitAccessoryHealthy
    target: str  # the network, volume or container it acts on
    reason: str

    def describe(self) -> str:
        return f"{self.verb}({self.target}): {self.reason}"


@dataclass(frozen=True)
class AccessoryObserved:
    name: str
    container: AccessoryFact | None
    volumes: frozenset[str]  # named volumes that exist
    networks: frozenset[str]  # networks that exist
    healthy: bool | None  # None: not running, not checked
    health_detail: str = ""


@dataclass(frozen=True)
class AccessoryPlan:
    accessory: str
    generation: str
    config: str
    actions: tuple[Step, ...]
    blockers: tuple[Blocker, ...]
    diffs: tuple[str, ...]
    healthy: bool  # healthy as observed (before the plan runs)
    notes: tuple[str, ...] = ()  # plain-language remarks for --plan (what a recreate does to data)

    @property
    def converged(self) -> bool:
        return not self.actions and not self.blockers

    @property
    def outdated(self) -> bool:
        return any(b.reason == "AccessoryOutdated" for b in self.blockers) or any(s.verb == "RemoveAccessory" for s in self.actions)


def changed_fields(acc: Accessory, c: AccessoryFact, extra: dict[str, str] | None) -> list[str]:
    """The fields whose hash differs from the container's label (all of them when it has none)."""
    have, want = c.fields(), acc.config_fields(extra)
    out = [k for k in CONFIG_FIELDS if have.get(k) != want[k]]
    if "image" in out and c.image:
        out[out.index("image")] = f"image {c.image} -> {acc.spec.image}"
    return out or ["configuration"]


def recreate_note(acc: Accessory) -> str | None:
    """What `update: recreate` means for this accessory's data, said plainly in --plan (None with update: manual).

    No volumes: a recreate loses nothing the controller could keep, so it is fine. With volumes: they are kept
    (never removed), and the note says whether a backup runs first or warns that none is configured.
    """
    s = acc.spec
    if s.update != "recreate":
        return None
    if not s.volumes:
        return f"update: recreate is fine: {acc.name} has no volumes, so recreating it loses no data"
    vols = ", ".join(sorted(s.volumes))
    if s.backup is not None:
        return f"update: recreate keeps volumes {vols} (never removed); the backup command runs first and must succeed"
    return (
        f"warning: update: recreate with volumes {vols} and no backup command: the volumes are kept, "
        "but nothing is backed up before a recreate (add backup: {command: [...]})"
    )


def plan_accessory(acc: Accessory, obs: AccessoryObserved, extra: dict[str, str] | None = None) -> AccessoryPlan:
    s = acc.spec
    name = acc.name
    config = acc.config_hash(extra)
    steps: list[Step] = []
    blockers: list[Blocker] = []
    diffs: list[str] = []
    c = obs.container

    def wait(reason: str) -> None:
        steps.append(Step("WaitAccessoryHealthy", name, reason))

    def ensure_storage() -> None:
        if s.network is not None and s.network not in obs.networks:
            diffs.append(f"network {s.network} missing")
            steps.append(Step("EnsureNetwork", s.network, "declared by spec.network, missing"))
        for vol in sorted(s.volumes):
            if vol not in obs.volumes:
                diffs.append(f"volume {vol} missing")
                steps.append(Step("EnsureVolume", vol, "declared by spec.volumes, missing"))

    if c is not None and not c.ours(name):
        blockers.append(
            Blocker(
                "AccessoryNotOurs",
                f"container {c.name} exists and was not created by the controller (no bluegreen.accessory={name} label): "
                "never touched; remove or rename it to let the controller create the accessory",
            )
        )
    elif c is None:
        diffs.append(f"container {name} missing")
        ensure_storage()
        steps.append(Step("CreateAccessory", name, f"missing; create from {s.image}"))
        wait("just created")
    elif c.config != config:
        changes = changed_fields(acc, c, extra)
        diffs.append(f"container {name} out of date: {', '.join(changes)}")
        if s.update == "manual":
            blockers.append(
                Blocker(
                    "AccessoryOutdated",
                    f"{name} is out of date ({', '.join(changes)}) and spec.update is manual: nothing touched; "
                    "to apply, set update: recreate (with a backup) or remove the container by hand (its volumes are kept)",
                )
            )
            if not c.running:
                # The old container still serves its data: keep it up until someone chooses to recreate.
                steps.append(Step("StartAccessory", name, f"{c.state}; out of date but update is manual"))
                wait("just started")
        else:
            ensure_storage()
            if s.backup is not None:
                steps.append(Step("Backup", name, "before recreating: must succeed"))
            if c.running or c.state == "restarting":
                steps.append(Step("StopAccessory", name, f"out of date; stop with {s.stopTimeoutSeconds}s grace"))
            steps.append(Step("RemoveAccessory", name, "out of date; the container only, volumes kept"))
            steps.append(Step("CreateAccessory", name, f"recreate from {s.image}"))
            wait("just recreated")
    elif not c.running:
        diffs.append(f"container {name} {c.state or 'stopped'}")
        ensure_storage()  # a volume removed by hand under a stopped container: Docker would refuse the start
        steps.append(Step("StartAccessory", name, c.state or "stopped"))
        wait("just started")
    elif obs.healthy is False:
        diffs.append(f"container {name} unhealthy: {obs.health_detail}")
        blockers.append(Blocker("AccessoryUnhealthy", f"{name} runs and fails its health check: {obs.health_detail}"))
    return AccessoryPlan(
        accessory=name,
        generation=acc.generation(),
        config=config,
        actions=tuple(steps),
        blockers=tuple(blockers),
        diffs=tuple(diffs),
        healthy=bool(c is not None and c.ours(name) and c.running and obs.healthy is not False),
        notes=tuple(n for n in (recreate_note(acc),) if n is not None),
    )
