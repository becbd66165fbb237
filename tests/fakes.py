"""Helpers around controller.world.fake.FakeWorld shared by the fast tests."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from controller.app.reconcile import AppResult, Reconciler
from controller.spec.app import BlueGreenApp
from controller.store.metrics import Metrics
from controller.store.state import StateStore
from controller.world.facts import port_of
from controller.world.fake import Crash, FakeContainer, FakeImage, FakeWorld
from tests.factories import make_app


@dataclass
class CheckedWorld(FakeWorld):
    """A FakeWorld that records every reload or flag change of the controller that moved traffic onto a container
    that is not healthy (perturbations change `files` directly, so they are not checked)."""

    violations: list[str] = field(default_factory=list)
    # > 0: a container traffic moves onto must also have run this long without a restart (rule 1, stableSeconds).
    stable_seconds: float = 0.0

    def _apps(self) -> set[str]:
        return {n.rsplit("-", 1)[0] if n.endswith(("-blue", "-green")) else n for n in self.loaded}

    def _checked(self, change: Callable[[], None]) -> None:
        apps = self._apps()
        before = {app: self.routed(app) for app in apps}
        before_preview = {app: self.preview_routed(app) for app in apps}  # spec.preview: requests that ask for it
        change()
        changed = [(a, self.routed(a)) for a in apps | self._apps() if self.routed(a) != before.get(a)]
        # Preview requests moved: checked unless they moved back onto what everyone else gets (the live route's risk).
        changed += [
            (a, pr) for a in apps | self._apps() if (pr := self.preview_routed(a)) != before_preview.get(a) and pr != self.routed(a)
        ]
        for app, servers in changed:
            for s in servers:
                port = port_of(s)
                healthy = any(c.fact.host_port == port and self._health_now(c) for c in self.containers.values())
                if not healthy:
                    self.violations.append(f"{app} routed to {s} which is not healthy")
                elif not any(c.fact.host_port == port and self._steady(c) for c in self.containers.values()):
                    self.violations.append(f"{app} routed to {s} which has not run {self.stable_seconds:g}s without a restart")

    def _steady(self, c: FakeContainer) -> bool:
        return c.started_at is not None and self.clock - c.started_at >= self.stable_seconds

    def reload(self) -> None:
        self._checked(super().reload)

    def write_file(self, path: Path, content: str, mode: int = 0o644) -> None:
        self._checked(lambda: FakeWorld.write_file(self, path, content, mode))

    def remove_file(self, path: Path) -> None:
        self._checked(lambda: FakeWorld.remove_file(self, path))


@dataclass
class SickAfterSwitch(CheckedWorld):
    """green's app stops answering its health check once traffic is on it (a leak that kills it soon after):
    a post-switch verification fails it."""

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        c = self.containers.get("dialogue-green")
        if c is not None and self.routed("dialogue") == ["127.0.0.1:18082"]:
            c.broken = True


def switched_back(state: Path) -> tuple[SickAfterSwitch, Reconciler, BlueGreenApp, AppResult]:
    """blue dialogue:1 served, then green dialogue:2 with `verify`, whose window fails: the result of that pass."""
    base = world_for(make_app())
    w = SickAfterSwitch(images=base.images)
    w.include_paths |= base.include_paths
    rec = reconciler(w, state)
    assert rec.reconcile(make_app()).result == "converged"
    v2 = make_app(image="dialogue:2", activeColor="green", verify={"windowSeconds": 10, "healthFailures": 2, "accessLog": str(state / "none.log")})
    return w, rec, v2, rec.reconcile(v2)


def world_for(*apps: BlueGreenApp, images: dict[str, FakeImage] | None = None) -> CheckedWorld:
    w = CheckedWorld(images=images or {"dialogue:1": FakeImage(), "dialogue:2": FakeImage(), "dialogue:bad": FakeImage("never")})
    for a in apps:
        w.include_paths.add(a.upstream_file)
    return w


def reconciler(world: FakeWorld, state_dir: Path, **kw: float) -> Reconciler:
    return Reconciler(world, StateStore(state_dir), Metrics(), backoff_base=kw.get("base", 60.0), backoff_max=kw.get("cap", 3600.0))


def crash_then_converge(w: FakeWorld, state_dir: Path, app: BlueGreenApp, crash_after: int, passes: int = 3) -> None:
    """A controller killed (FakeWorld's Crash) after `crash_after` mutations, then up to `passes` passes to converge."""
    w.crash_after = crash_after
    with contextlib.suppress(Crash):
        reconciler(w, state_dir).reconcile(app)
    w.crash_after = None
    for _ in range(passes):
        if reconciler(w, state_dir).reconcile(app).converged:
            break
