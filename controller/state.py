"""The state dir: the one-writer lock, per-app memory and status, and the action history.

    <state-dir>/lock                     flock; a killed holder releases it with its process
    <state-dir>/history.jsonl            every action taken, one JSON object a line
    <state-dir>/apps/<app>/status.json   rebuilt from observation on every pass
    <state-dir>/apps/<app>/memory.json   failed revisions (for backoff), last deploy
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from controller.drivers import files
from controller.errors import HostError, LockBusy
from controller.facts import Failure, Memory
from controller.logs import redact_json_text

DEFAULT_STATE_DIR = Path("/var/lib/bluegreen")
HISTORY_READ_LIMIT = 64 * 1024 * 1024


class Lock:
    """Exclusive flock on <state-dir>/lock, waited for at most `timeout` seconds."""

    def __init__(self, state_dir: Path, timeout: float) -> None:
        self.path = state_dir / "lock"
        self.timeout = timeout
        self._fd: int | None = None

    def __enter__(self) -> Lock:
        try:
            # No link followed, no FIFO waited on, only a regular file in a directory root alone can change:
            # the pid written below must never truncate another file.
            fd = files.open_state_file(self.path, os.O_RDWR | os.O_CREAT, purpose=f"open lock {self.path}")
        except OSError as e:
            raise HostError(f"cannot open lock {self.path}: {e.strerror}") from e
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_holder(fd)
                    os.close(fd)
                    raise LockBusy(
                        f"another reconcile holds {self.path}{holder}; waited {self.timeout:g}s (--lock-timeout)"
                    ) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


class StateStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def app_dir(self, app: str) -> Path:
        return self.root / "apps" / app

    # Memory -----------------------------------------------------------------------------
    def load_memory_raw(self, app: str) -> dict[str, Any]:
        return _read_json(self.app_dir(app) / "memory.json")

    def load_memory(self, app: str, backoff_base: float, backoff_max: float) -> Memory:
        raw = self.load_memory_raw(app)
        failures = {}
        for rev, f in (raw.get("failures") or {}).items():
            try:
                failures[rev] = Failure(**f)
            except TypeError:
                continue  # written by another version: forget it rather than crash
        return Memory(
            failures=failures,
            converged_generation=raw.get("convergedGeneration"),
            backoff_base=backoff_base,
            backoff_max=backoff_max,
        )

    def save_memory(self, app: str, memory: Memory, last_deploy: dict[str, Any] | None) -> None:
        raw = self.load_memory_raw(app)
        raw["failures"] = {rev: asdict(f) for rev, f in memory.failures.items()}
        raw["convergedGeneration"] = memory.converged_generation
        if last_deploy is not None:
            raw["lastDeploy"] = last_deploy
        files.write_atomic(self.app_dir(app) / "memory.json", redact_json_text(json.dumps(raw, indent=2, sort_keys=True)) + "\n")

    # Status -----------------------------------------------------------------------------
    def load_status(self, app: str) -> dict[str, Any]:
        return _read_json(self.app_dir(app) / "status.json")

    def save_status(self, app: str, status: dict[str, Any]) -> None:
        files.write_atomic(self.app_dir(app) / "status.json", redact_json_text(json.dumps(status, indent=2, sort_keys=True)) + "\n")

    # History ----------------------------------------------------------------------------
    def append_history(self, entry: dict[str, Any]) -> None:
        line = redact_json_text(json.dumps(entry, sort_keys=True, separators=(",", ":"))) + "\n"
        path = self.root / "history.jsonl"
        try:
            # O_APPEND with one write per line: concurrent appenders never interleave a line. Opened like the lock:
            # never appends to the target of a link.
            fd = files.open_state_file(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, purpose=f"append to {path}")
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except OSError as e:
            raise HostError(f"cannot append to {path}: {e.strerror}") from e

    def history(self, app: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        text = files.read_text(self.root / "history.jsonl", HISTORY_READ_LIMIT)
        if not text:
            return []  # missing, or garbage (a link, a FIFO, too big to read here)
        lines = text.splitlines()
        out = []
        for line in reversed(lines):
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if app is None or e.get("app") == app:
                out.append(e)
                if len(out) >= limit:
                    break
        return list(reversed(out))


def _read_json(path: Path) -> dict[str, Any]:
    # The safe read: a link, a FIFO, a device or a file bigger than files.STATE is garbage ("").
    text = files.read_text(path, files.STATE)
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}  # a torn or hand-edited file: start over rather than refuse to run
    return data if isinstance(data, dict) else {}
