"""Plans in tests, made the one way every mode makes them: `gather` + `decide` (tests/test_one_plan.py).

- `plan_for(app, world, memory)`: gather from a world (FakeWorld), with the memory a test sets (a `Memory`, or a
  `StateStore` to read it from), then decide;
- `decide_on(app, obs, memory, now=...)`: decide on an observation a test built by hand (no world at all).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controller.app.decide import PassInputs, decide
from controller.app.gather import gather
from controller.app.plan import Plan
from controller.kernel.backoff import DEFAULT_POLICY, BackoffPolicy
from controller.spec.app import BlueGreenApp
from controller.store.documents import FailoverState
from controller.store.releases import Releases
from controller.store.state import StateStore
from controller.world.facts import ImagesObserved, Memory, Observed
from controller.world.protocol import World


@dataclass
class Remembered:
    """A state dir held in memory, for `gather`: what a test says the controller remembers."""

    memory: Memory = field(default_factory=Memory)
    failover: FailoverState = field(default_factory=FailoverState)
    releases: Releases = field(default_factory=Releases)

    def load_memory(self, app: str) -> Memory:
        return self.memory

    def load_failover(self, app: str) -> FailoverState:
        return self.failover

    def load_releases(self, app: str) -> Releases:
        return self.releases


def inputs_for(
    app: BlueGreenApp,
    world: World,
    memory: Memory | StateStore | None = None,
    *,
    failover: FailoverState | None = None,
    revision_extra: dict[str, str] | None = None,
    not_ready: dict[str, str] | None = None,
    images: bool = False,
    policy: BackoffPolicy = DEFAULT_POLICY,
    releases: Releases | None = None,
) -> PassInputs:
    """`releases`: the release ledger pruning keeps images by (with `images`; a StateStore reads its own)."""
    store = memory if isinstance(memory, StateStore) else Remembered(memory or Memory(), failover or FailoverState(), releases or Releases())
    deps = dict(not_ready or {})
    return gather(app, world, store, revision_extra=revision_extra, dependencies=lambda a: deps, images=images, policy=policy)


def plan_for(app: BlueGreenApp, world: World, memory: Memory | StateStore | None = None, **kw: Any) -> Plan:
    """`decide(inputs_for(...))`: the keywords are `inputs_for`'s."""
    return decide(inputs_for(app, world, memory, **kw))


def decide_on(
    app: BlueGreenApp,
    obs: Observed,
    memory: Memory | None = None,
    *,
    now: float,
    failover: FailoverState | None = None,
    revision_extra: dict[str, str] | None = None,
    not_ready: dict[str, str] | None = None,
    images: ImagesObserved | None = None,
    policy: BackoffPolicy = DEFAULT_POLICY,
    releases: Releases | None = None,
) -> Plan:
    fo = failover or FailoverState()
    return decide(
        PassInputs(app, obs, memory or Memory(), fo, False, now, dict(revision_extra or {}), dict(not_ready or {}), images, policy,
                   releases)
    )
