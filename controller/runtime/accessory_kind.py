"""`--watch` for accessories (issue 13): the accessory kind's registration with the watch manager (controller/runtime/watch.py).

Each accessory gets a worker of its own, triggered at start, on a spec change, on a Docker event of a container
labelled `bluegreen.accessory`, on SIGHUP and on the resync clock; again every RETRY seconds while it is not
converged. One accessory pass runs at a time (they may share a network or volume; --once runs them in turn).
When an accessory's readiness changes, every app whose dependsOn names it gets a pass (`Outcome.ready`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from controller.accessory.reconcile import AccessoryRunner
from controller.app.requeue import Requeue
from controller.runtime.watch import Outcome, Snapshot
from controller.spec.directory import Selection
from controller.world.facts import LABEL_ACCESSORY, ContainerFact

RETRY = 5.0  # seconds between passes while an accessory is not converged
EVENTS = frozenset({"start", "die", "stop", "kill", "oom", "destroy", "health_status"})


class AccessoryKind:
    name = "accessory"
    label = LABEL_ACCESSORY
    events = EVENTS

    def __init__(self, runner: AccessoryRunner) -> None:
        self.runner = runner
        self._one_at_a_time = threading.Lock()

    def objects(self, sel: Selection) -> dict[Path, Any]:
        # The accessories in force are also what the apps' dependsOn is checked against (runner.dependencies).
        self.runner.accessories = {a.name: a for a in sel.accessories}
        return dict(sel.accessories_by_file)

    def depends_on(self, obj: Any) -> Collection[str]:
        return ()

    def snapshot(self) -> Snapshot | None:
        return None  # the runner lists the accessories' containers itself

    def reconcile(self, obj: Any, containers: dict[str, ContainerFact] | None, should_stop: Callable[[], bool]) -> Outcome:
        with self._one_at_a_time:
            r = self.runner.reconcile(obj, should_stop)
        requeue = Requeue(None, "converged") if r.converged else Requeue(RETRY, r.result)
        return Outcome(r.result, requeue, r.error, ready=r.healthy, detail=r)

    def failed(self, name: str, error: Exception) -> Requeue:
        return Requeue(RETRY, type(error).__name__)
