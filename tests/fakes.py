"""Helpers around controller.testing.FakeWorld shared by the fast tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from controller.facts import port_of
from controller.metrics import Metrics
from controller.reconcile import Reconciler
from controller.spec import BlueGreenApp
from controller.state import StateStore
from controller.testing import FakeImage, FakeWorld


@dataclass
class CheckedWorld(FakeWorld):
    """A FakeWorld that records every reload that moved traffic onto a container that is not healthy."""

    violations: list[str] = field(default_factory=list)

    def reload(self) -> None:
        before = {k: list(v) for k, v in self.loaded.items()}
        super().reload()
        for app, servers in self.loaded.items():
            if servers == before.get(app):
                continue
            for s in servers:
                port = port_of(s)
                healthy = any(c.fact.host_port == port and self._health_now(c) for c in self.containers.values())
                if not healthy:
                    self.violations.append(f"{app} routed to {s} which is not healthy")


def world_for(*apps: BlueGreenApp, images: dict[str, FakeImage] | None = None) -> CheckedWorld:
    w = CheckedWorld(images=images or {"dialogue:1": FakeImage(), "dialogue:2": FakeImage(), "dialogue:bad": FakeImage("never")})
    for a in apps:
        w.include_paths.add(a.upstream_file)
    return w


def reconciler(world: FakeWorld, state_dir: Path, **kw: float) -> Reconciler:
    return Reconciler(world, StateStore(state_dir), Metrics(), backoff_base=kw.get("base", 60.0), backoff_max=kw.get("cap", 3600.0))
