"""Gathering: everything one pass decides on, read once from the host and the state dir (`PassInputs`).

`decide(gather(...))` is the one way a plan is made, for every mode (`--once`, `--plan`, `--status`, the
verification step, `deploy/rollback/promote`); tests/test_one_plan.py keeps it so. What is gathered, once:

- the observation (`observe.observe`: containers, route, files; `Observed.serving` derived there);
- the memory (`memory.json` and the verification window) and the failover state tracked for this observation:
  `PassInputs.failover_changed` tells the caller to save it (only modes that write do);
- the host's capacity, only when the plan starts a new color (`decide.needs_capacity`);
- the accessories an app `dependsOn` that are not ready (`Dependencies`, the accessory runner's);
- the images, for pruning, only when asked (after a converged pass, and for `--plan`), with the release ledger
  (`releases.json`: which images pruning keeps).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from controller.app.decide import PassInputs, needs_capacity
from controller.app.failover import track
from controller.app.observe import index_containers, observe
from controller.app.steps.prune import observe_images
from controller.kernel.backoff import DEFAULT_POLICY, BackoffPolicy
from controller.kernel.imageref import local_repository
from controller.store.documents import FailoverState
from controller.store.releases import Releases, note_seen
from controller.world.facts import CapacityFact, ContainerFact, Memory, Observed
from controller.world.protocol import World

if TYPE_CHECKING:  # the models load with the first spec validated (none on a spec-cache hit)
    from controller.spec.app import BlueGreenApp

# An app's `dependsOn`: each accessory not running healthy now, with why (AccessoryRunner.dependencies).
Dependencies = Callable[["BlueGreenApp"], dict[str, str]]


def no_dependencies(app: BlueGreenApp) -> dict[str, str]:
    """Without an accessory runner: nothing to wait for."""
    return {}


class Memories(Protocol):
    """What gathering reads from the state dir (state.StateStore)."""

    def load_memory(self, app: str) -> Memory: ...

    def load_failover(self, app: str) -> FailoverState: ...

    def load_releases(self, app: str) -> Releases: ...


def gather(
    app: BlueGreenApp,
    world: World,
    store: Memories,
    *,
    revision_extra: dict[str, str] | None = None,
    dependencies: Dependencies = no_dependencies,
    containers: dict[str, ContainerFact] | None = None,
    images: bool = False,
    policy: BackoffPolicy = DEFAULT_POLICY,
) -> PassInputs:
    """`containers`: one Docker listing shared by the apps of a pass (else listed here)."""
    looked, looked_mono, boot = world.now(), world.monotonic(), world.boot_id()  # failover: a failure is seen from the observation's start
    obs = observe(app, world, containers if containers is not None else index_containers(world))
    mem = store.load_memory(app.name)
    old = store.load_failover(app.name)
    fo = track(app, obs, old, looked, looked_mono, mem, boot)
    done = fo.active if old.switching is not None and fo.active is not None and fo.active != old.active else None
    inputs = PassInputs(app, obs, mem, fo, fo != old, world.now(), dict(revision_extra or {}), policy=policy, failed_over=done, mono=world.monotonic(), boot=boot)
    if needs_capacity(inputs):
        inputs = replace(inputs, observed=replace(obs, capacity=_capacity(app, world, obs)), now=world.now(), mono=world.monotonic())
    if app.spec.dependsOn:
        inputs = replace(inputs, not_ready=dependencies(app))
    return with_images(inputs, world, store.load_releases(app.name)) if images else inputs


def with_images(inputs: PassInputs, world: World, releases: Releases) -> PassInputs:
    """`inputs` with the image facts pruning plans from (after a pass found nothing left to do), and the release
    ledger with the app's images not seen before noted as seen now (the caller saves it when it changed)."""
    images = observe_images(world)
    repo = local_repository(inputs.app.spec.image)
    ids = [img.id for img in images.images if repo in {local_repository(r) for r in img.references}]
    seen = note_seen(releases, ids, world.now())  # the app's repository's images only: the file stays small
    return replace(inputs, images=images, releases=seen)


def _capacity(app: BlueGreenApp, world: World, obs: Observed) -> CapacityFact:
    live = obs.containers.get(obs.serving) if obs.serving is not None else None
    # The live color (its usage stands in for a missing limit) and the wanted color's current container
    # (removed before the new one starts: what it uses comes free).
    wanted = obs.containers.get(app.spec.activeColor)
    measure = tuple(c.name for c in (live, wanted) if c is not None and c.running)
    return world.host_capacity(app.spec.image, measure, live.image_id if live is not None and live.image_id else None)
