"""Bounded polling."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, message: str = "condition"
) -> T:
    """Call `predicate` until it returns something truthy (returned) or `timeout` passes (TimeoutError).

    Exceptions raised by `predicate` count as "not yet"; the last one is chained to the TimeoutError.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    last_value: object = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last_value = value
            last_exc = None
        except Exception as e:
            last_exc = e
        if time.monotonic() >= deadline:
            detail = f"last error: {last_exc!r}" if last_exc is not None else f"last value: {last_value!r}"
            raise TimeoutError(f"{message} not met after {timeout:g}s ({detail})") from last_exc
        time.sleep(interval)


def wait_while_running(
    predicate: Callable[[], object], proc: subprocess.Popen[str], timeout: float, what: str, interval: float = 0.01
) -> None:
    """Poll `predicate` until it is true; fail at once if the controller `proc` exits first, or after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the controller exited ({proc.returncode}) before {what}")
        time.sleep(interval)
    raise AssertionError(f"{what} did not happen within {timeout:g}s")


def kill_9_when(predicate: Callable[[], object], proc: subprocess.Popen[str], timeout: float, what: str) -> None:
    """SIGKILL the controller `proc` as soon as `predicate` holds (see wait_while_running); it is dead afterwards,
    whatever happened."""
    try:
        wait_while_running(predicate, proc, timeout, what, interval=0.05)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
