"""The state dir: the one-writer lock, per-app memory and status, and the action history.

    <state-dir>/lock                     flock; a killed holder releases it with its process
    <state-dir>/history.jsonl            every action taken, one JSON object a line (rotated: .1 .. .3)
    <state-dir>/counters.json            --once --metrics-textfile: the counters' totals (controller/store/counters.py)
    <state-dir>/apps/<app>/status.json   rebuilt from observation on every pass
    <state-dir>/apps/<app>/memory.json   failed revisions (for backoff), last deploy
    <state-dir>/apps/<app>/failover.json failing-since time, revisions served, an active failover (controller/app/failover.py)
    <state-dir>/apps/<app>/verify.json   the last post-switch verification window (controller/world/verification.py)
    <state-dir>/apps/<app>/pruned.json   when unused images were last swept (spec.keepImages, controller/app/steps/prune.py)
    <state-dir>/cache/specs/<key>.json   validated specs (controller/spec/cache.py)
    <state-dir>/apps/<app>/releases.json the releases: what served, when, how it ended (controller/store/releases.py)
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, TypeVar

from controller.kernel import files
from controller.kernel.document import Alias, Corrupt, Document, Epoch, Stored
from controller.kernel.errors import HostError, LockBusy
from controller.kernel.logs import get_logger, redact_json_text
from controller.spec.base import Color
from controller.store.documents import FAILOVER, STATUS, FailoverState, LastDeploy, Status
from controller.store.releases import RELEASES, Releases
from controller.world.facts import Failure, HookRecord, Memory
from controller.world.verification import WINDOW, Window

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
        if not files.flock_within(fd, self.timeout):
            holder = _read_holder(fd)
            os.close(fd)
            raise LockBusy(str(self.path), holder, self.timeout)
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
class MemoryFile(Stored):
    """memory.json: what `Memory` keeps of it, and the last deploy."""

    failures: dict[str, Failure] = field(default_factory=dict)
    converged_generation: Annotated[str | None, Alias("convergedGeneration")] = None
    last_deploy: Annotated[LastDeploy | None, Alias("lastDeploy")] = None  # absent until a first deploy
    hooks: dict[str, HookRecord] | None = None  # absent until a first hook ran

    OMIT_NONE = frozenset({"lastDeploy", "hooks"})


MEMORY = Document(MemoryFile)
HOOKS_KEPT = 20  # hook records kept per app (the newest): enough for every revision a rollback may go back to


@dataclass(frozen=True)
class HistoryEntry(Stored):
    """One line of history.jsonl: an action taken (or an image pruned, a failover, a verdict)."""

    time: str  # ISO 8601, UTC
    app: str  # the app's (or the accessory's) name
    reconcile_id: Annotated[str, Alias("reconcileId")]
    action: str  # the step's verb, RemoveImage, FailedOver, Verify
    color: Color | None  # None: an accessory's step, an image
    image: str  # the image deployed; for RemoveImage the removed image's names
    outcome: str  # ok, failed (RemoveImage: skipped too; Verify: abandoned too)
    message: str
    kind: str | None = None  # "Accessory" for an accessory's step
    target: str | None = None  # an accessory step's target (network, volume, container)
    image_id: Annotated[str | None, Alias("imageId")] = None  # RemoveImage
    commit: str | None = None  # --git-url: the commit the app's spec came from

    OMIT_NONE = frozenset({"kind", "target", "imageId", "commit"})


HISTORY = Document(HistoryEntry)


@dataclass(frozen=True)
class SweptFile(Stored):
    """pruned.json: when the app's unused images were last swept (reconcile.Reconciler._prune)."""

    swept_at: Annotated[Epoch, Alias("sweptAt")]


SWEPT = Document(SweptFile)


class Ledger:
    """The one history writer: every line history.jsonl gets is a `HistoryEntry` recorded here.

    With a source (--git-url), each line of an app names the commit its spec came from.
    """

    def __init__(self, store: StateStore, commit: Callable[[str], str | None] = lambda app: None) -> None:
        self.store = store
        self.commit = commit

    def record(self, entry: HistoryEntry) -> None:
        if entry.commit is None and entry.kind is None and (c := self.commit(entry.app)) is not None:
            entry = replace(entry, commit=c)
        self.store.append_history(HISTORY.dump(entry))


class StateStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        # path -> the problem last logged for it: a corrupt file is reported once, not on every read.
        self._corrupt: dict[Path, str] = {}
        self._corrupt_lock = threading.Lock()

    def app_dir(self, app: str) -> Path:
        return self.root / "apps" / app

    def _load(self, app: str, name: str, parse: Callable[[str], T] | Document[T]) -> T | None:
        """The parsed file; None when it is absent or corrupt (a corrupt one is logged once as a warning).

        A state file is a cache of what the controller wrote: when it cannot be read back, the controller
        carries on as if it were absent (and rewrites it) rather than fail the app, or every app of the run.
        """
        path = self.app_dir(app) / name
        try:
            text = _read(path)
            if text is None:
                value = None
            elif isinstance(parse, Document):
                # bytes this controller wrote (their digest is on file) need no validation; any other is validated
                value = parse.decode_trusted(text) if _digest(text) == _read_digest(path) else parse.parse(text)
            else:
                value = parse(text)
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
    def _memory(self, app: str) -> MemoryFile:
        return self._load(app, "memory.json", MEMORY) or MemoryFile()

    def _save_memory(self, app: str, m: MemoryFile) -> None:
        _write(self.app_dir(app) / "memory.json", redact_json_text(MEMORY.text(m).rstrip("\n")) + "\n")

    def load_memory(self, app: str) -> Memory:
        m = self._memory(app)
        return Memory(
            failures=m.failures,
            converged_generation=m.converged_generation,
            hooks={rec.key: rec for rec in (m.hooks or {}).values()},
            verify=self.load_window(app),
        )

    def record_hook(self, app: str, rec: HookRecord) -> None:
        """Remember a hook's run (before its container is removed: see controller/app/steps/gates.py); the newest HOOKS_KEPT."""
        m = self._memory(app)
        hooks = {**{r.key: r for r in (m.hooks or {}).values()}, rec.key: rec}
        newest = sorted(hooks.items(), key=lambda kv: kv[1].started_at, reverse=True)[:HOOKS_KEPT]
        self._save_memory(app, replace(m, hooks=dict(newest)))

    def load_last_deploy(self, app: str) -> LastDeploy | None:
        return self._memory(app).last_deploy

    def save_memory(self, app: str, memory: Memory, last_deploy: LastDeploy | None) -> None:
        """Failures and converged generation from `memory`; `last_deploy` when given, else the one on file."""
        m = self._memory(app)
        self._save_memory(
            app,
            replace(
                m,
                failures=dict(memory.failures),
                converged_generation=memory.converged_generation,
                last_deploy=last_deploy if last_deploy is not None else m.last_deploy,
            ),
        )

    # Failover ---------------------------------------------------------------------------
    def load_failover(self, app: str) -> FailoverState:
        return self._load(app, "failover.json", FAILOVER) or FailoverState()

    def save_failover(self, app: str, state: FailoverState) -> None:
        _write(self.app_dir(app) / "failover.json", FAILOVER.text(state))

    # Verification window ----------------------------------------------------------------
    def load_window(self, app: str) -> Window | None:
        """The last verification window (None: none, or a corrupt file); `verify.window_closed` says if it ended."""
        return self._load(app, "verify.json", WINDOW)

    def save_window(self, app: str, window: Window) -> None:
        _write(self.app_dir(app) / "verify.json", WINDOW.text(window))

    # Releases ---------------------------------------------------------------------------
    def load_releases(self, app: str) -> Releases:
        """The releases (none when the file is absent, or corrupt: warned once, like every state file)."""
        return self._load(app, "releases.json", RELEASES) or Releases()

    def save_releases(self, app: str, releases: Releases) -> None:
        _write(self.app_dir(app) / "releases.json", redact_json_text(RELEASES.text(releases).rstrip("\n")) + "\n")

    # Image sweeps (controller/app/steps/prune.py) ------------------------------------------------
    def load_swept_at(self, app: str) -> float | None:
        """When the app's unused images were last swept (Unix time); None when never, or unreadable."""
        f = self._load(app, "pruned.json", SWEPT)
        return f.swept_at if f is not None else None

    def save_swept_at(self, app: str, at: float) -> None:
        _write(self.app_dir(app) / "pruned.json", SWEPT.text(SweptFile(at)))

    # Status -----------------------------------------------------------------------------
    def load_status(self, app: str) -> Status | None:
        """The last status written; None when absent or corrupt."""
        return self._load(app, "status.json", STATUS)

    def save_status(self, app: str, status: Status) -> None:
        self._save_status(app, STATUS.dump(status))

    def load_accessory_status(self, name: str) -> dict[str, Any] | None:
        """An accessory's status.json (controller/accessory/reconcile.py) as written; None when absent or not an object."""
        return self._load(name, "status.json", _json_object)

    def save_accessory_status(self, name: str, doc: Mapping[str, Any]) -> None:
        self._save_status(name, doc)

    def _save_status(self, app: str, doc: Mapping[str, Any]) -> None:
        _write(self.app_dir(app) / "status.json", redact_json_text(json.dumps(doc, indent=2, sort_keys=True)) + "\n")

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


def _read(path: Path) -> str | None:
    """The text of `path`; None when there is no file; Corrupt when it is no regular file of ours."""
    # The safe read: a link, a FIFO, a device or a file bigger than files.STATE is garbage.
    text = files.read_text(path, files.STATE)
    if isinstance(text, files.Garbage):
        raise Corrupt(f"garbage ({text.what})")
    return text


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _read_digest(path: Path) -> str | None:
    """The digest kept beside `path` when it was last written; None when absent or not ours (a mismatch)."""
    text = files.read_text(_digest_path(path), 128)
    return None if text is None or isinstance(text, files.Garbage) else text.strip()


def _write(path: Path, text: str) -> None:
    """Write a state document, then the digest of its bytes beside it (what lets the next read skip validation).
    A crash between the two leaves a digest that does not match: the next read validates, nothing is trusted."""
    files.write_atomic(path, text)
    files.write_atomic(_digest_path(path), _digest(text) + "\n")


def _json_object(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # a torn or hand-edited file; too deeply nested; an integer too long
        raise Corrupt("not JSON") from None
    if not isinstance(data, dict):
        raise Corrupt("not a JSON object")
    return data
