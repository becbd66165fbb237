"""The state dir: the one-writer lock, per-app memory and status, and the action history.

    <state-dir>/lock                     flock; a killed holder releases it with its process
    <state-dir>/history.jsonl            every action taken, one JSON object a line (rotated: .1 .. .3)
    <state-dir>/counters.json            --once --metrics-textfile: the counters' totals (controller/counters.py)
    <state-dir>/apps/<app>/status.json   rebuilt from observation on every pass
    <state-dir>/apps/<app>/memory.json   failed revisions (for backoff), last deploy
    <state-dir>/apps/<app>/failover.json failing-since time, revisions served, an active failover (controller/failover.py)
    <state-dir>/apps/<app>/verify.json   the last post-switch verification window (controller/verify.py)
    <state-dir>/apps/<app>/releases.json the releases: what served, when, how it ended (controller/releases.py)
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from controller.document import Corrupt as Invalid
from controller.drivers import files
from controller.errors import HostError, LockBusy
from controller.facts import Failure, HookRecord, Memory
from controller.failover import FailoverState
from controller.jsonshape import Corrupt, Reader
from controller.logs import get_logger, redact_json_text
from controller.releases import RELEASES, Ledger
from controller.status import LastDeploy
from controller.verify import Window

T = TypeVar("T")

DEFAULT_STATE_DIR = Path("/var/lib/bluegreen")
HISTORY_READ_LIMIT = 64 * 1024 * 1024
# history.jsonl rotates before a line would take it past HISTORY_MAX_BYTES: it becomes history.jsonl.1 (and .1
# becomes .2, ...), HISTORY_KEEP rotated files are kept. The history takes at most (1 + HISTORY_KEEP) MiB.
HISTORY_MAX_BYTES = 1024 * 1024
HISTORY_KEEP = 3
_HISTORY_LOCK = threading.Lock()  # one rotation at a time in this process (other processes: the state dir's lock)


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
                    raise LockBusy(str(self.path), holder, self.timeout) from None
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
    """The holder's pid as it wrote it, or "" (digits only: the file is never echoed)."""
    try:
        pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return ""
    return pid if pid.isdigit() else ""


@dataclass(frozen=True)
class _MemoryFile:
    """memory.json, checked: `raw` keeps keys of other versions so that saving does not drop them."""

    raw: dict[str, Any] = field(default_factory=dict)
    failures: dict[str, Failure] = field(default_factory=dict)
    converged_generation: str | None = None
    last_deploy: LastDeploy | None = None
    hooks: dict[str, HookRecord] = field(default_factory=dict)


HOOKS_KEPT = 20  # hook records kept per app (the newest): enough for every revision a rollback may go back to


def _parse_hooks(r: Reader) -> dict[str, HookRecord]:
    """memory.json "hooks": that a hook ran for a revision (controller/gaterun.py)."""
    out: dict[str, HookRecord] = {}
    on_file = r.opt_obj("hooks") if r.has("hooks") else None
    for _, h in on_file.values() if on_file is not None else ():
        rec = HookRecord(
            phase=h.text("phase"),
            revision=h.text("revision"),
            state=h.text("state"),
            started_at=h.number("startedAt"),
            exit_code=h.opt_integer("exitCode", lo=-(2**31)) if h.has("exitCode") else None,
            finished_at=h.number("finishedAt") if h.has("finishedAt") else None,
            output=tuple(h.texts("output")) if h.has("output") else (),
        )
        out[rec.key] = rec
    return out


def _parse_memory(raw: dict[str, Any]) -> _MemoryFile:
    r = Reader(raw)
    failures = {}
    on_file = r.opt_obj("failures") if r.has("failures") else None
    for rev, f in on_file.values() if on_file is not None else ():
        failures[rev] = Failure(
            revision=f.text("revision"),
            color=f.color("color"),
            count=f.integer("count", lo=1),
            last_failed_at=f.number("last_failed_at"),
            reason=f.text("reason"),
            message=f.text("message"),
            gates=f.text("gates") if f.has("gates") else "",
        )
    last = r.opt_obj("lastDeploy") if r.has("lastDeploy") else None
    return _MemoryFile(
        raw=raw,
        hooks=_parse_hooks(r),
        failures=failures,
        converged_generation=r.opt_text("convergedGeneration") if r.has("convergedGeneration") else None,
        last_deploy=LastDeploy.from_json(last) if last is not None else None,
    )


class StateStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        # path -> the problem last logged for it: a corrupt file is reported once, not on every read.
        self._corrupt: dict[Path, str] = {}
        self._corrupt_lock = threading.Lock()

    def app_dir(self, app: str) -> Path:
        return self.root / "apps" / app

    def _load(self, app: str, name: str, parse: Callable[[dict[str, Any]], T]) -> T | None:
        """The parsed file; None when it is absent or corrupt (a corrupt one is logged once as a warning).

        A state file is a cache of what the controller wrote: when it cannot be read back, the controller
        carries on as if it were absent (and rewrites it) rather than fail the app, or every app of the run.
        """
        path = self.app_dir(app) / name
        try:
            raw = _read_json(path)
            value = parse(raw) if raw is not None else None
        except Corrupt as e:
            with self._corrupt_lock:
                first = self._corrupt.get(path) != str(e)
                self._corrupt[path] = str(e)
            if first:
                get_logger(app=app).warning("state.corrupt", path=str(path), problem=str(e), action="treated as absent")
            return None
        with self._corrupt_lock:
            self._corrupt.pop(path, None)
        return value

    # Memory -----------------------------------------------------------------------------
    def _memory(self, app: str) -> _MemoryFile:
        return self._load(app, "memory.json", _parse_memory) or _MemoryFile()

    def load_memory(self, app: str, backoff_base: float, backoff_max: float) -> Memory:
        m = self._memory(app)
        return Memory(
            failures=m.failures,
            converged_generation=m.converged_generation,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            hooks=m.hooks,
            verify=self.load_window(app),
        )

    def record_hook(self, app: str, rec: HookRecord) -> None:
        """Remember a hook's run (before its container is removed: see controller/gaterun.py); the newest HOOKS_KEPT."""
        raw = dict(self._memory(app).raw)
        hooks = {k: v for k, v in (raw.get("hooks") or {}).items() if isinstance(v, dict)} if isinstance(raw.get("hooks"), dict) else {}
        hooks[rec.key] = {
            "phase": rec.phase,
            "revision": rec.revision,
            "state": rec.state,
            "startedAt": rec.started_at,
            "exitCode": rec.exit_code,
            "output": list(rec.output),
            **({"finishedAt": rec.finished_at} if rec.finished_at is not None else {}),
        }
        newest = sorted(hooks.items(), key=lambda kv: float(kv[1].get("startedAt") or 0), reverse=True)[:HOOKS_KEPT]
        raw["hooks"] = dict(newest)
        files.write_atomic(self.app_dir(app) / "memory.json", redact_json_text(json.dumps(raw, indent=2, sort_keys=True)) + "\n")

    def load_last_deploy(self, app: str) -> LastDeploy | None:
        return self._memory(app).last_deploy

    def save_memory(self, app: str, memory: Memory, last_deploy: LastDeploy | None) -> None:
        """Failures and converged generation from `memory`; `last_deploy` when given, else the one on file."""
        m = self._memory(app)
        raw = dict(m.raw)
        raw["failures"] = {rev: asdict(f) for rev, f in memory.failures.items()}
        raw["convergedGeneration"] = memory.converged_generation
        if last_deploy is not None:
            raw["lastDeploy"] = last_deploy.to_json()
        files.write_atomic(self.app_dir(app) / "memory.json", redact_json_text(json.dumps(raw, indent=2, sort_keys=True)) + "\n")

    # Failover ---------------------------------------------------------------------------
    def load_failover(self, app: str) -> FailoverState:
        return self._load(app, "failover.json", FailoverState.from_json) or FailoverState()

    def save_failover(self, app: str, state: FailoverState) -> None:
        files.write_atomic(self.app_dir(app) / "failover.json", json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n")
    # Verification window ----------------------------------------------------------------
    def load_window(self, app: str) -> Window | None:
        """The last verification window (None: none, or a corrupt file); `verify.window_closed` says if it ended."""
        return self._load(app, "verify.json", Window.from_json)

    def save_window(self, app: str, window: Window) -> None:
        files.write_atomic(self.app_dir(app) / "verify.json", json.dumps(window.to_json(), indent=2, sort_keys=True) + "\n")

    # Releases ---------------------------------------------------------------------------
    def load_releases(self, app: str) -> Ledger:
        """The release ledger (empty when absent, or corrupt: warned once, like every state file)."""
        return self._load(app, "releases.json", _parse_releases) or Ledger()

    def save_releases(self, app: str, ledger: Ledger) -> None:
        files.write_atomic(self.app_dir(app) / "releases.json", redact_json_text(RELEASES.text(ledger).rstrip("\n")) + "\n")

    # Status -----------------------------------------------------------------------------
    def load_status(self, app: str, parse: Callable[[dict[str, Any]], T]) -> T | None:
        """The last status written, read back by `parse` (which raises Corrupt); None when absent or corrupt."""
        return self._load(app, "status.json", parse)

    def save_status(self, app: str, status: Mapping[str, Any]) -> None:
        files.write_atomic(self.app_dir(app) / "status.json", redact_json_text(json.dumps(status, indent=2, sort_keys=True)) + "\n")

    # History ----------------------------------------------------------------------------
    def append_history(self, entry: dict[str, Any]) -> None:
        line = redact_json_text(json.dumps(entry, sort_keys=True, separators=(",", ":"))) + "\n"
        path = self.root / "history.jsonl"
        data = line.encode()
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        try:
            with _HISTORY_LOCK:
                # O_APPEND with one write per line: concurrent appenders never interleave a line. Opened like the lock:
                # never appends to the target of a link.
                fd = files.open_state_file(path, flags, purpose=f"append to {path}")
                try:
                    size = os.fstat(fd).st_size
                    if size and size + len(data) > HISTORY_MAX_BYTES:
                        os.close(fd)
                        fd = -1
                        files.rotate(path, HISTORY_KEEP)
                        fd = files.open_state_file(path, flags, purpose=f"append to {path}")
                    os.write(fd, data)
                finally:
                    if fd >= 0:
                        os.close(fd)
        except OSError as e:
            raise HostError(f"cannot append to {path}: {e.strerror}") from e

    def history(self, app: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for name in ["history.jsonl", *(f"history.jsonl.{i}" for i in range(1, HISTORY_KEEP + 1))]:  # newest first
            text = files.read_text(self.root / name, HISTORY_READ_LIMIT)
            if not text:
                continue  # missing, or garbage (a link, a FIFO, too big to read here)
            for line in reversed(text.splitlines()):
                try:
                    e = json.loads(line)
                except ValueError:
                    continue
                if isinstance(e, dict) and (app is None or e.get("app") == app):
                    out.append(e)
                    if len(out) >= limit:
                        return list(reversed(out))
        return list(reversed(out))


def _parse_releases(raw: dict[str, Any]) -> Ledger:
    try:
        return RELEASES.parse(json.dumps(raw))
    except Invalid as e:
        raise Corrupt(str(e)) from None


def _read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`; None when there is no file; Corrupt when it holds anything else."""
    # The safe read: a link, a FIFO, a device or a file bigger than files.STATE is garbage.
    text = files.read_text(path, files.STATE)
    if text is None:
        return None
    if isinstance(text, files.Garbage):
        raise Corrupt(f"garbage ({text.what})")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # a torn or hand-edited file; too deeply nested; an integer too long
        raise Corrupt("not JSON") from None
    if not isinstance(data, dict):
        raise Corrupt("not a JSON object")
    return data
