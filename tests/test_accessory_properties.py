"""Property tests (hypothesis state machine) for accessories and dependsOn (issue 13), on the in-memory world.

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
- `dependencies.gate` never holds back an action on the live color and never lets a new color start.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from controller.accessory import Accessory
from controller.accessory_reconcile import AccessoryRunner
from controller.accessory_world import AccessoryRequest, OneOff, OneOffResult
from controller.actions import (
    CreateContainer,
    RemoveContainer,
    StartContainer,
    StopContainer,
    SwitchRoute,
    WaitHealthy,
    WriteMarker,
)
from controller.dependencies import gate
from controller.planner import Plan
from controller.state import StateStore
from controller.testing_accessories import FakeAccessoryWorld


class Crash(BaseException):
    """kill -9: the pass ends right after a step took effect (BaseException: no handler of the runner sees it)."""


class CrashingWorld(FakeAccessoryWorld):
    """Counts the steps that change the world; the `crash_after`-th one takes effect, then the pass dies."""

    crash_after: int | None = None

    def _step(self) -> None:
        if self.crash_after is not None:
            self.crash_after -= 1
            if self.crash_after <= 0:
                self.crash_after = None
                raise Crash()

    def create_volume(self, name: str, labels: dict[str, str]) -> None:
        super().create_volume(name, labels)
        self._step()

    def create_network(self, name: str, labels: dict[str, str]) -> None:
        super().create_network(name, labels)
        self._step()

    def create_accessory(self, req: AccessoryRequest) -> None:
        super().create_accessory(req)
        self._step()

    def start(self, name: str) -> None:
        super().start(name)
        self._step()

    def stop(self, name: str, timeout: int) -> None:
        super().stop(name, timeout)
        self._step()

    def remove(self, name: str) -> None:
        super().remove(name)
        self._step()

    def rename(self, name: str, new_name: str) -> None:
        super().rename(name, new_name)
        self._step()

    def run_oneoff(self, job: OneOff, timeout: float) -> OneOffResult:
        r = super().run_oneoff(job, timeout)
        self._step()
        return r


def make(image: str, update: str, backup: bool, env: str) -> Accessory:
    spec: dict[str, Any] = {
        "image": image,
        "volumes": {"redis-data": "/data"},
        "network": "dialogue",
        "update": update,
        "env": {"V": env},
        "healthCheck": {"command": ["redis-cli", "ping"], "timeoutSeconds": 1, "intervalSeconds": 0.5},
    }
    if backup:
        spec["backup"] = {"command": ["backup"]}
    return Accessory.model_validate({"apiVersion": "bluegreen/v1", "kind": "Accessory", "metadata": {"name": "redis"}, "spec": spec})


class AccessoryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        import tempfile
        from pathlib import Path

        self._tmp = tempfile.TemporaryDirectory(prefix="bgacc-")
        self.world = CrashingWorld()
        self.runner = AccessoryRunner(self.world, StateStore(Path(self._tmp.name)))
        self.acc = make("redis:7.2", "manual", False, "a")
        self.volumes_seen: set[str] = set()
        self.stranger: tuple[str, str] | None = None  # (image, state) of a stranger's container
        self.world.images.update({"redis:7.2": ("/cache", "/data"), "redis:7.4": ("/cache",)})
        self.cache: str | None = None  # the anonymous volume at /cache, once a container of ours made it

    def teardown(self) -> None:
        self._tmp.cleanup()

    @rule(
        image=st.sampled_from(["redis:7.2", "redis:7.4"]),
        update=st.sampled_from(["manual", "recreate"]),
        backup=st.booleans(),
        env=st.sampled_from(["a", "b"]),
    )
    def edit_spec(self, image: str, update: str, backup: bool, env: str) -> None:
        self.acc = make(image, update, backup and update == "recreate", env)

    @rule()
    def kill(self) -> None:
        c = self.world.containers.get("redis")
        if c is not None and c.req is not None:
            c.state = "exited"

    @rule()
    def remove_by_hand(self) -> None:
        c = self.world.containers.get("redis")
        if c is not None and c.req is not None:
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
        self.world.oneoff_exit = code

    @rule(after=st.integers(min_value=1, max_value=5))
    def reconcile_killed_midway(self, after: int) -> None:
        self.world.crash_after = after
        self._pass(crashed_ok=True)

    @rule()
    def reconcile(self) -> None:
        before = self.world.containers.get("redis")
        was_outdated = before is not None and before.req is not None and before.labels.get("bluegreen.accessory.config") != self.acc.config_hash()
        self._pass(crashed_ok=False)
        c = self.world.containers.get("redis")
        if self.stranger is not None:
            return
        if self.acc.spec.update == "manual" and was_outdated:
            assert c is before, "update: manual replaced the container"
            return
        if self.acc.spec.backup is not None and self.world.oneoff_exit != 0 and was_outdated:
            return  # the backup failed: nothing recreated (checked by the ordering invariant)
        assert c is not None and c.req is not None and c.state == "running"
        assert c.labels["bluegreen.accessory.config"] == self.acc.config_hash()
        (cache,) = [v for v, path in c.mounts.items() if path == "/cache"]
        assert self.cache in (None, cache), "a recreate left the image volume's data behind"
        self.cache = cache
        assert "redis-retired" not in self.world.containers

    def _pass(self, crashed_ok: bool) -> None:
        self.world.calls.clear()
        stranger = self.world.containers.get("redis") if self.stranger is not None else None
        try:
            self.runner.reconcile(self.acc)
        except Crash:
            assert crashed_ok
        self.world.crash_after = None
        calls = self.world.calls
        if stranger is not None:
            assert self.world.containers.get("redis") is stranger and stranger.state == self.stranger[1]  # type: ignore[index]
            assert not any(c.endswith(" redis") and not c.startswith("create_") for c in calls), calls
        # The backup comes first: no stop/remove of the old container before a successful backup in this pass.
        retire = "rename redis redis-retired"
        if self.acc.spec.backup is not None and retire in calls and self.acc.spec.update == "recreate":
            first_destructive = min(calls.index(c) for c in ("stop redis", retire) if c in calls)
            assert "oneoff redis-backup" in calls[:first_destructive], calls
            assert self.world.oneoff_exit == 0, calls

    @invariant()
    def volumes_are_never_removed(self) -> None:
        now = set(self.world.volumes)
        assert self.volumes_seen <= now
        self.volumes_seen = now


TestAccessories = AccessoryMachine.TestCase
TestAccessories.settings = settings(max_examples=60, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


ACTIONS = st.lists(
    st.tuples(
        st.sampled_from([CreateContainer, StartContainer, WaitHealthy, SwitchRoute, WriteMarker, StopContainer, RemoveContainer]),
        st.sampled_from(["blue", "green"]),
    ),
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(actions=ACTIONS, serving=st.sampled_from(["blue", "green", None]), ready=st.booleans())
def test_gate_never_holds_the_live_color_and_never_starts_a_new_one(actions: list[tuple[Any, str]], serving: Any, ready: bool) -> None:
    p = Plan("web", "g", {"blue": "r1", "green": "r2"}, serving, "green", tuple(cls(color, "x") for cls, color in actions), (), ())
    g = gate(p, {} if ready else {"redis": "exited"})
    if ready:
        assert g is p
        return
    new = [a for a in g.actions if isinstance(a, (CreateContainer, StartContainer, RemoveContainer)) and a.color != serving]
    assert not new, g.actions
    assert not any(isinstance(a, (StopContainer, RemoveContainer)) and a.color == serving for a in g.actions) or g is p
    if g is not p:  # held back: every heal of the live color is kept, in order, and the blocker says why
        live = [a for a in p.actions if a.color == serving and isinstance(a, (CreateContainer, StartContainer, WaitHealthy))]
        assert list(g.actions) == live
        assert g.blockers[-1].reason == "DependencyNotReady"
