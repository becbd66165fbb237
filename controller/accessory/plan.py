"""The accessory planner (issue 13): pure, from observed facts to the steps that make one accessory true.

- missing -> its network and volumes first, then create, then wait healthy;
- stopped (ours) -> start, wait healthy;
- out of date (its config hash label differs) -> `update: manual`: blocker AccessoryOutdated naming the change
  and the remedy, nothing touched; `update: recreate`: backup (must succeed), stop with the grace period,
  rename the old container aside (`<name>-retired`), create the new one with the old one's anonymous volumes
  (an image's `VOLUME`, as Docker made them) mounted at the same paths, as `docker compose` keeps them, remove
  the retired container (never a volume), wait healthy;
- a container with the accessory's name that the controller did not create -> blocker, never touched.

Every step is idempotent against a re-observation, so a pass killed anywhere (even between the stop and the
create of a recreate) leaves a world the next pass completes: a stopped old container is still out of date; a
retired one without a successor is what the successor is created from (its anonymous volumes), and is removed
once a container of the name mounts them; the volume is never an action's object except to create it when
absent.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.spec.accessory import CONFIG_FIELDS, Accessory
from controller.world.actions import Blocker
from controller.world.facts import AccessoryFact, is_anonymous, retired_name


@dataclass(frozen=True)
class Step:
    """One step of an accessory's plan; `verb` names it in --plan, history and logs."""

    verb: str  # EnsureNetwork EnsureVolume Backup StopAccessory RetireAccessory RemoveAccessory CreateAccessory StartAccessory WaitAccessoryHealthy
    target: str  # the network, volume or container it acts on
    reason: str
    keep: tuple[tuple[str, str], ...] = ()  # Backup, CreateAccessory: anonymous volumes of the old container, (volume, path)

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
    retired: AccessoryFact | None = None  # the container named <name>-retired: an interrupted recreate's old one
    image_volumes: tuple[str, ...] | None = None  # paths spec.image declares as VOLUME; None: not known (not pulled)

    def old(self) -> AccessoryFact | None:
        """The container whose anonymous volumes a recreate keeps: the current one, else a retired one of ours."""
        c = self.container if self.container is not None and self.container.ours(self.name) else None
        return c or (self.retired if self.retired is not None and self.retired.ours(self.name) else None)


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
        return any(b.reason == "AccessoryOutdated" for b in self.blockers) or any(s.verb == "RetireAccessory" for s in self.actions)


def changed_fields(acc: Accessory, c: AccessoryFact, extra: dict[str, str] | None) -> list[str]:
    """The fields whose hash differs from the container's label (all of them when it has none)."""
    have, want = c.fields(), acc.config_fields(extra)
    out = [k for k in CONFIG_FIELDS if have.get(k) != want[k]]
    if "image" in out and c.image:
        out[out.index("image")] = f"image {c.image} -> {acc.spec.image}"
    return out or ["configuration"]


def recreate_note(acc: Accessory, obs: AccessoryObserved | None = None) -> str | None:
    """What `update: recreate` means for this accessory's data, said plainly in --plan (None with update: manual).

    Named volumes (spec.volumes) are kept, never removed. So are the anonymous volumes of the current container
    (its image's `VOLUME`s, which hold the data of redis, mongo, qdrant without spec.volumes): mounted again at
    the same paths, named here. Without any, a recreate loses nothing the controller could keep. The note says
    whether a backup runs first or warns that none is configured, and warns of an anonymous volume spec.volumes
    now mounts a named one over (its data is not copied).
    """
    s = acc.spec
    if s.update != "recreate":
        return None
    old = obs.old() if obs is not None else None
    kept = old.anonymous_volumes(s.volumes) if old is not None else {}
    paths = set(s.volumes.values()) | set(kept.values())
    declared = sorted(p for p in (obs.image_volumes or ()) if p not in paths) if obs is not None else []
    if not s.volumes and not kept and not declared:
        unknown = obs is not None and obs.image_volumes is None
        tail = f" (image {s.image} is not present locally: a VOLUME it declares shows once it is pulled)" if unknown else ""
        return f"update: recreate is fine: {acc.name} has no volumes, so recreating it loses no data{tail}"
    parts = [f"volumes {', '.join(sorted(s.volumes))}"] if s.volumes else []
    parts += [f"anonymous volume {v[:12]} at {p}" for v, p in sorted(kept.items(), key=lambda kv: kv[1])]
    parts += [f"the anonymous volume of the image's VOLUME {p}" for p in declared]
    what = ", ".join(parts)
    how = "never removed" + ("; anonymous ones mounted again at the same paths" if kept or declared else "")
    note = (
        f"update: recreate keeps {what} ({how}); the backup command runs first and must succeed"
        if s.backup is not None
        else f"warning: update: recreate with {what} and no backup command: the volumes are kept ({how}), "
        "but nothing is backed up before a recreate (add backup: {command: [...]})"
    )
    over = sorted((p, v) for v, p in (old.mounts if old is not None else ()) if is_anonymous(v) and v not in s.volumes and p in s.volumes.values())
    if over:
        named = {p: v for v, p in s.volumes.items()}
        note += "; warning: " + ", ".join(f"anonymous volume {v[:12]} at {p} is replaced by volume {named[p]}" for p, v in over)
        note += " (its data stays in it, not copied)"
    return note


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

    retired = obs.retired if obs.retired is not None and obs.retired.ours(name) else None

    def keep(old: AccessoryFact) -> tuple[tuple[str, str], ...]:
        return tuple(sorted(old.anonymous_volumes(s.volumes).items()))

    def kept(volumes: tuple[tuple[str, str], ...]) -> str:
        return f", with anonymous volumes {', '.join(f'{v[:12]} at {p}' for v, p in volumes)}" if volumes else ""

    def retire_leftover(current: AccessoryFact) -> bool:
        """A retired container beside `current`: removed when `current` mounts its anonymous volumes, else kept
        (a blocker: its data would be left behind). True when the plan may go on."""
        if retired is None:
            return True
        lost = {v: p for v, p in retired.anonymous_volumes(s.volumes).items() if v not in dict(current.mounts)}
        if not lost:
            steps.append(Step("RemoveAccessory", retired.name, f"left by an interrupted recreate; its volumes are mounted by {name}"))
            return True
        diffs.append(f"container {retired.name} left by an interrupted recreate")
        blockers.append(
            Blocker(
                "AccessoryRetiredKept",
                f"{retired.name} (left by an interrupted recreate) has anonymous volumes {name} does not mount "
                f"({', '.join(f'{v[:12]} at {p}' for v, p in sorted(lost.items()))}): never touched; "
                f"copy what you need, then remove it by hand (docker rm {retired.name}, without -v: volumes stay)",
            )
        )
        return False

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
        if retired is None:
            steps.append(Step("CreateAccessory", name, f"missing; create from {s.image}"))
        else:  # a recreate interrupted after the rename: the new container gets the old one's volumes
            vols = keep(retired)
            steps.append(Step("CreateAccessory", name, f"missing; recreate from {s.image}{kept(vols)} of {retired.name}", vols))
            steps.append(Step("RemoveAccessory", retired.name, f"the old container only; its volumes are mounted by {name}"))
        wait("just created")
    elif not retire_leftover(c):
        pass
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
            vols = keep(c)
            if s.backup is not None:
                steps.append(Step("Backup", name, f"before recreating: must succeed{kept(vols)}", vols))
            if c.running or c.state == "restarting":
                steps.append(Step("StopAccessory", name, f"out of date; stop with {s.stopTimeoutSeconds}s grace"))
            old = retired_name(name)
            steps.append(Step("RetireAccessory", name, f"out of date; renamed {old} until the new container mounts its volumes"))
            steps.append(Step("CreateAccessory", name, f"recreate from {s.image}{kept(vols)}", vols))
            steps.append(Step("RemoveAccessory", old, "the old container only, volumes kept"))
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
        notes=tuple(n for n in (recreate_note(acc, obs),) if n is not None),
    )
