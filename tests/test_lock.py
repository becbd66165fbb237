"""The state dir's lock: one writer; a busy lock is a LockBusy that carries its facts, not only a sentence."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from controller.kernel.errors import LockBusy
from controller.runtime.watch import PassLock
from controller.store.state import Lock


def test_a_busy_lock_names_the_holder_and_how_long_this_run_waited(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Lock(state, 0), pytest.raises(LockBusy) as busy:
        Lock(state, 0.2).__enter__()
    e = busy.value
    assert (e.path, e.holder_pid, e.waited) == (str(state / "lock"), str(os.getpid()), 0.2)
    assert str(e) == f"another reconcile holds {state / 'lock'} (pid {os.getpid()}); waited 0.2s (--lock-timeout)"


def test_watch_mode_reports_its_own_wait_not_one_try(tmp_path: Path) -> None:
    # PassLock tries with a zero timeout again and again; the error must say how long it waited in all.
    state = tmp_path / "state"
    with Lock(state, 0), pytest.raises(LockBusy) as busy:
        PassLock(state, 0.3, threading.Event()).acquire()
    assert busy.value.waited == 0.3
    assert str(busy.value).endswith(f"(pid {os.getpid()}); waited 0.3s (--lock-timeout)")
