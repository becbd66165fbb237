"""Property tests (hypothesis state machines) for accessories and dependsOn (issue 13), on the one in-memory world
(`controller.world.fake.FakeWorld`: one clock and one crash budget for apps and accessories).

Whatever happens between passes — a spec change (image, env, update mode, backup), a kill, a removal by hand,
a stranger's container under the accessory's name, a failing backup, a pass cut short after any step (kill -9)
— these hold:

- a named volume is never removed;
- the anonymous volume of the image's VOLUME (/cache here) is mounted by the accessory's container after every
  complete pass, the same one throughout (a recreate, even cut short, keeps it) unless the container was removed
  by hand;
- a container the controller did not create is never started, stopped or removed;
- a recreate never stops or removes the old container before its backup succeeded in the same pass;
- with `update: manual` an out-of-date container of ours is never removed;
- a complete pass with nothing in the way (no stranger, a working backup) leaves the accessory as the spec says:
  ours, running, with the spec's config hash (unless update is manual and it was out of date);
- `rules/depends_on.depends_on` never holds back an action on the live color nor a route's removal (preview off), and
  never lets a new color start.

Apps and accessories together (`HostMachine`): an app that `dependsOn` a Redis accessory on a shared network, both
reconciled per pass (accessories first) on one world, killed after any mutation of either kind, with Redis killed,
removed or broken between passes. Nginx is never switched onto an unhealthy or unsteady color (CheckedWorld), no new
color is created or started while Redis is not ready, and with Redis healthy the app converges.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from controller.accessory.reconcile import AccessoryRunner
from controller.app.reconcile import Reconciler
from controller.app.rules.depends_on import depends_on
from controller.spec.accessory import Accessory
from controller.spec.app import BlueGreenApp
from controller.store.metrics import Metrics
from controller.store.state import StateStore
from controller.world.actions import (
    CreateContainer,
    RemoveContainer,
    StartContainer,
    StopContainer,
    SwitchPreview,
    SwitchRoute,
    WaitHealthy,
    WriteMarker,
)
from controller.world.facts import port_of
from controller.world.fake import Crash, FakeImage, FakeWorld
from tests.factories import make_app
from tests.fakes import CheckedWorld

PING = ("redis-cli", "ping")
REDIS_IMAGES = ("redis:7.2", "redis:7.4")


def redis_image() -> FakeImage:
    return FakeImage(execs={PING: (0, "PONG"), ("backup",): (0, "")}, listens=(6379,))


def make(image: str, update: str, backup: bool, env: str) -> Accessory:
    spec: dict[str, Any] = {
        "image": image,
        "volumes": {"redis-data": "/data"},
        "network": "dialogue",
        "update": update,
        "env": {"V": env},
        "healthCheck": {"command": list(PING), "timeoutSeconds": 1, "intervalSeconds": 0.5},
    }
    if backup:
        spec["backup"] = {"command": ["backup"]}
    return Accessory.model_validate({"apiVersion": "bluegreen/v1", "kind": "Accessory", "metadata": {"name": "redis"}, "spec": spec})


class VolumesKept(RuleBasedStateMachine):
    """The invariant both machines share: a named volume, once seen, is never removed."""

    def __init__(self, world: FakeWorld) -> None:
        super().__init__()
        self.world = world
        self.volumes_seen: set[str] = set()

    @invariant()
    def volumes_are_never_removed(self) -> None:
        now = set(self.world.volumes)
        assert self.volumes_seen <= now
        self.volumes_seen = now


class AccessoryMachine(VolumesKept):
    world: FakeWorld

    def __init__(self) -> None:
        super().__init__(FakeWorld(images={img: redis_image() for img in REDIS_IMAGES}))
        self._tmp = tempfile.TemporaryDirectory(prefix="bgacc-")
        self.runner = AccessoryRunner(self.world, StateStore(Path(self._tmp.name)))
        self.acc = make("redis:7.2", "manual", False, "a")
        self.stranger: tuple[str, str] | None = None  # (image, state) of a stranger's container
        self.backup_exit: int | None = 0
        self.world.images["redis:7.2"].volumes = ("/cache", "/data")  # /data: spec.volumes; /cache: anonymous
        self.world.images["redis:7.4"].volumes = ("/cache",)
        self.cache: str | None = None  # the anonymous volume at /cache, once a container of ours made it

    def teardown(self) -> None:
        self._tmp.cleanup()

    @rule(
        image=st.sampled_from(list(REDIS_IMAGES)),
        update=st.sampled_from(["manual", "recreate"]),
        backup=st.booleans(),
        env=st.sampled_from(["a", "b"]),
    )
    def edit_spec(self, image: str, update: str, backup: bool, env: str) -> None:
        self.acc = make(image, update, backup and update == "recreate", env)

    @rule()
    def kill(self) -> None:
        c = self.world.containers.get("redis")
        if c is not None and c.request is not None:
            self.world.kill("redis")

    @rule()
    def remove_by_hand(self) -> None:
        c = self.world.containers.get("redis")
        if c is not None and c.request is not None:
            del self.world.containers["redis"]
            self.cache = None  # its anonymous volume is orphaned by hand: a new container gets a new one

    @rule()
    def stranger_takes_the_name(self) -> None:
        if "redis" not in self.world.containers:
            self.world.add_stranger("redis")
            self.stranger = ("other:1", "running")

    @rule()
    def stranger_leaves(self) -> None:
        if self.stranger is not None:
            del self.world.containers["redis"]
            self.stranger = None

    @rule(code=st.sampled_from([0, 0, 1, None]))
    def backup_outcome(self, code: int | None) -> None:
        self.backup_exit = code  # None: it runs past its timeout
        for img in REDIS_IMAGES:
            self.world.images[img].execs[("backup",)] = (code, "")

    @rule(after=st.integers(min_value=0, max_value=5))
    def reconcile_killed_midway(self, after: int) -> None:
        self.world.crash_after = after  # `after` steps take effect, the next one kills the pass
        self._pass(crashed_ok=True)

    @rule()
    def reconcile(self) -> None:
        before = self.world.containers.get("redis")
        was_outdated = before is not None and before.request is not None and before.fact.labels.get("bluegreen.accessory.config") != self.acc.config_hash()
        self._pass(crashed_ok=False)
        c = self.world.containers.get("redis")
        if self.stranger is not None:
            return
        if self.acc.spec.update == "manual" and was_outdated:
            assert c is before, "update: manual replaced the container"
            return
        if self.acc.spec.backup is not None and self.backup_exit != 0 and was_outdated:
            return  # the backup failed: nothing recreated (checked by the ordering invariant)
        assert c is not None and c.request is not None and c.state == "running"
        assert c.fact.labels["bluegreen.accessory.config"] == self.acc.config_hash()
        (cache,) = [v for v, path in c.mounts.items() if path == "/cache"]
        assert self.cache in (None, cache), "a recreate left the image volume's data behind"
        self.cache = cache
        assert "redis-retired" not in self.world.containers

    def _pass(self, crashed_ok: bool) -> None:
        self.world.mutations.clear()
        stranger = self.world.containers.get("redis") if self.stranger is not None else None
        try:
            self.runner.reconcile(self.acc)
        except Crash:
            assert crashed_ok
        self.world.crash_after = None
        calls = self.world.mutations
        if stranger is not None:
            assert self.world.containers.get("redis") is stranger and stranger.state == self.stranger[1]  # type: ignore[index]
            assert not any(c.split()[-1] == "redis" for c in calls), calls
        # The backup comes first: no stop/remove of the old container before a successful backup in this pass.
        retire = "rename redis redis-retired"
        if self.acc.spec.backup is not None and retire in calls and self.acc.spec.update == "recreate":
            first_destructive = min(calls.index(c) for c in ("stop redis", retire) if c in calls)
            assert "oneoff redis-backup" in calls[:first_destructive], calls
            assert self.backup_exit == 0, calls


TestAccessories = AccessoryMachine.TestCase
TestAccessories.settings = settings(max_examples=60, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


REDIS = make("redis:7.2", "recreate", False, "a")
APPS = [
    make_app(image=image, activeColor=color, dependsOn=["redis"], network="dialogue")
    for image, color in (("dialogue:1", "blue"), ("dialogue:2", "green"))  # deploy and rollback: never the live image changed
]


class HostMachine(VolumesKept):
    """An app with `dependsOn: [redis]` beside its Redis accessory on one FakeWorld, both kinds killed mid-pass."""

    world: CheckedWorld

    def __init__(self) -> None:
        super().__init__(CheckedWorld(images={"dialogue:1": FakeImage(), "dialogue:2": FakeImage(), "redis:7.2": redis_image()}))
        self._logs = ExitStack()
        self._logs.enter_context(structlog.testing.capture_logs())
        self.state_dir = Path(tempfile.mkdtemp(prefix="bg-host-"))
        self.world.include_paths.add(APPS[0].upstream_file)
        self.app: BlueGreenApp = APPS[0]

    def teardown(self) -> None:
        self._logs.close()
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def _serving(self) -> str | None:
        ports = {port_of(s) for s in self.world.routed(self.app.name)}
        return next((c for c in ("blue", "green") if self.app.spec.ports.of(c) in ports), None)

    def _redis_ready(self) -> bool:
        c = self.world.containers.get("redis")
        return c is not None and c.request is not None and c.state == "running" and not c.broken

    def _pass(self) -> bool:
        """Accessories, then the app (the order of a directory pass); True when the app converged."""
        store = StateStore(self.state_dir)
        runner = AccessoryRunner(self.world, store)
        runner.reconcile_all([REDIS])
        rec = Reconciler(self.world, store, Metrics(), dependencies=runner.dependencies)  # dependsOn, gathered per pass
        ready, serving = self._redis_ready(), self._serving()
        self.world.mutations.clear()
        converged = rec.reconcile(self.app).converged
        if not ready:
            # dependsOn: no new color is created or started while Redis is not ready (the live one may be healed).
            new = [m for m in self.world.mutations if m.split()[0] in ("create", "start") and not m.endswith(f"-{serving}")]
            assert not [m for m in new if m.split()[-1].startswith(f"{self.app.name}-")], (serving, self.world.mutations)
        return converged

    @rule(i=st.integers(0, len(APPS) - 1))
    def change_spec(self, i: int) -> None:
        self.app = APPS[i]

    @rule()
    def reconcile(self) -> None:
        converged = self._pass()
        if self._redis_ready():
            for _ in range(3):  # settles within a bounded number of passes once nothing perturbs it
                if converged:
                    break
                converged = self._pass()
            assert converged, self.world.mutations
            assert self._serving() == self.app.spec.activeColor

    @rule(budget=st.integers(0, 10))
    def reconcile_killed(self, budget: int) -> None:
        self.world.crash_after = budget  # counts the mutations of both kinds: a kill -9 anywhere in the pass
        try:
            self._pass()
        except Crash:
            pass
        finally:
            self.world.crash_after = None

    @rule()
    def kill_redis(self) -> None:
        if "redis" in self.world.containers:
            self.world.kill("redis")

    @rule()
    def remove_redis(self) -> None:
        self.world.containers.pop("redis", None)

    @rule(broken=st.booleans())
    def redis_breaks(self, broken: bool) -> None:
        c = self.world.containers.get("redis")
        if c is not None:
            c.broken = broken  # running, but `redis-cli ping` fails: not ready for its dependants

    @rule(color=st.sampled_from(["blue", "green"]))
    def stop_color(self, color: str) -> None:
        if f"{self.app.name}-{color}" in self.world.containers:
            self.world.kill(f"{self.app.name}-{color}")

    @invariant()
    def never_routed_to_an_unhealthy_color(self) -> None:
        assert self.world.violations == []


TestHost = HostMachine.TestCase
TestHost.settings = settings(max_examples=100, stateful_step_count=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


ACTIONS = st.lists(
    st.tuples(
        st.sampled_from([CreateContainer, StartContainer, WaitHealthy, SwitchRoute, WriteMarker, StopContainer, RemoveContainer, SwitchPreview]),
        st.sampled_from(["blue", "green"]),
    ),
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(actions=ACTIONS, serving=st.sampled_from(["blue", "green", None]), ready=st.booleans())
def test_depends_on_never_holds_the_live_color_and_never_starts_a_new_one(actions: list[tuple[Any, str]], serving: Any, ready: bool) -> None:
    planned = tuple(cls(color, "x") for cls, color in actions)
    held = depends_on(planned, serving, {} if ready else {"redis": "exited"})
    if ready:
        assert held is None
        return
    kept = planned if held is None else held.actions
    new = [a for a in kept if isinstance(a, (CreateContainer, StartContainer, RemoveContainer)) and a.color != serving]
    assert not new, kept
    assert not any(isinstance(a, (StopContainer, RemoveContainer)) and a.color == serving for a in kept) or held is None
    if held is not None:  # held back: every heal of the live color and every route removal is kept, in order; the blocker says why
        live = [a for a in planned if (a.color == serving and isinstance(a, (CreateContainer, StartContainer, WaitHealthy))) or isinstance(a, SwitchPreview)]
        assert list(held.actions) == live
        assert held.blocker.reason == "DependencyNotReady"
