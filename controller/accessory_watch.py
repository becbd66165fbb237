"""`--watch` for accessories (issue 13): one worker reconciles every accessory of the spec directory (under the
pass lock the app workers share) at start, on a spec change, on a Docker event of a container labelled
`bluegreen.accessory`, and on the resync clock; sooner (RETRY) while one is not converged. When an accessory's
readiness changes, every app gets a pass: a new color held by `dependsOn` starts as soon as it may.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from controller.accessory import Accessory
from controller.accessory_reconcile import AccessoryRunner
from controller.errors import ControllerError
from controller.facts import LABEL_ACCESSORY
from controller.logs import get_logger

RETRY = 5.0  # seconds between passes while an accessory is not converged
EVENTS = ("start", "die", "stop", "kill", "oom", "destroy", "health_status")


class AccessoryLoop:
    def __init__(
        self,
        runner: AccessoryRunner,
        held: Callable[[], AbstractContextManager[None]],
        stop: threading.Event,
        resync: float,
        on_ready_change: Callable[[], None],
        docker: Any = None,
    ) -> None:
        self.runner = runner
        self._held = held
        self._stop = stop
        self._resync = resync
        self._on_ready_change = on_ready_change
        self._docker = docker
        self._wake = threading.Event()
        self._mutex = threading.Lock()
        self._accessories: list[Accessory] = []
        self._ready: dict[str, bool] = {}
        self.passes = 0
        self._stream: Any = None
        self.log = get_logger()

    def set(self, accessories: list[Accessory]) -> None:
        """The accessories in force after a spec read; a change triggers a pass."""
        with self._mutex:
            changed = accessories != self._accessories
            self._accessories = list(accessories)
            self.runner.accessories = {a.name: a for a in accessories}
        if changed:
            self.trigger()

    def trigger(self) -> None:
        self._wake.set()

    def threads(self) -> list[threading.Thread]:
        out = [threading.Thread(target=self._loop, name="accessories", daemon=True)]
        if self._docker is not None:
            out.append(threading.Thread(target=self._events, name="accessory-events", daemon=True))
        return out

    def _loop(self) -> None:
        deadline = time.monotonic() + self._resync  # the first pass comes from `set` at start
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining > 0 and not self._wake.wait(min(1.0, remaining)):
                continue  # at least once a second: notice a stop
            self._wake.clear()
            if self._stop.is_set():
                return
            deadline = time.monotonic() + self._pass()

    def _pass(self) -> float:
        """One pass over every accessory; the seconds until the next one."""
        with self._mutex:
            accessories = list(self._accessories)
        if not accessories:
            return self._resync
        try:
            with self._held():
                results = self.runner.reconcile_all(accessories)
        except ControllerError as e:  # the lock: retry soon
            self.log.warning("watch.accessories_not_run", error=str(e))
            return RETRY
        except Exception as e:  # a bug must not kill the worker
            self.log.exception("watch.accessories_crashed", error=f"{type(e).__name__}: {e}")
            return RETRY
        self.passes += 1
        ready = {r.accessory: r.healthy for r in results}
        if ready != self._ready:
            self._ready = ready
            self._on_ready_change()
        return RETRY if any(not r.converged for r in results) else self._resync

    def _events(self) -> None:
        filters = {"type": ["container"], "label": [LABEL_ACCESSORY], "event": list(EVENTS)}
        attempt = 0
        while not self._stop.is_set():
            try:
                stream = self._docker.events(filters)
            except Exception as e:
                attempt += 1
                self.log.warning("docker.accessory_events_unavailable", error=str(e))
                if self._stop.wait(min(30.0, 2.0**attempt)):
                    return
                continue
            self._stream = stream
            if self._stop.is_set():
                stream.close()
                return
            try:
                for event in stream:
                    attempt = 0
                    attrs = (event.get("Actor") or {}).get("Attributes") or {}
                    self.log.debug("docker.event", accessory=attrs.get(LABEL_ACCESSORY), action=event.get("Action"))
                    self.trigger()
                    if self._stop.is_set():
                        break
            except Exception as e:
                self.log.warning("docker.accessory_events_lost", error=f"{type(e).__name__}: {e}")
            finally:
                stream.close()
                self._stream = None
            self.trigger()  # events may have been missed
            attempt += 1
            if self._stop.wait(min(30.0, 2.0**attempt)):
                return

    def close(self) -> None:
        """On stop: wake the worker and end the event stream (from any thread)."""
        self._wake.set()
        stream = self._stream
        if stream is not None:
            stream.close()
