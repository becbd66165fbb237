"""File primitives for a root process among files and directories that may be hostile: the only module
that opens, writes or removes the controller's files (markers, flags, includes, env files, the state
dir, the metrics textfile) or checks a spec file.

The trust model, in the spirit of sshd's StrictModes:

- A directory the controller reads or writes in must be owned by root (or the running uid) and not
  writable by group or others; so must each of its ancestors, except that an ancestor may be a
  root-owned sticky directory such as /tmp. Otherwise: `HostError` naming the directory.
- Paths are walked from / one component at a time (`openat` with O_NOFOLLOW): a symbolic link on the
  way is followed only when it is owned by root (or the running uid) and sits in such a directory,
  i.e. only root could have put it there. A link as the last component is never followed.
- Reads open regular files only, without blocking (O_NONBLOCK: a FIFO never hangs a pass), and at
  most `limit` bytes: anything else is `Garbage`, which says what it is and never holds its bytes.
- Writes go to a temporary file created O_EXCL|O_NOFOLLOW in the target's directory, fsync'd,
  fchmod'ed, renamed over the target (a link there is replaced, never followed), then the directory
  is fsync'd: a crash leaves the old file or the new one.
- Spec files are root-equivalent (`testCommand` runs as root): `check_spec_file` refuses one that
  someone other than root could have written, with `SpecError` (exit 2).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from controller.kernel.errors import HostError, SpecError

SMALL = 64 * 1024  # markers, flags, includes: a few hundred bytes when the controller wrote them
STATE = 4 * 1024 * 1024  # status.json, memory.json
SPEC = 1024 * 1024  # a spec file: a few KiB when a person wrote it
MAX_LINKS = 40  # like the kernel's ELOOP limit

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


class Untrusted(HostError):
    """A directory or file that someone other than root could have changed: refused, never used."""

    def __init__(self, purpose: str, detail: str) -> None:
        super().__init__(f"cannot {purpose}: {detail}")
        self.detail = detail


class Garbage(str):
    """What a read returns for something that is not a small regular file (a link, a FIFO, a device, a
    directory, too many bytes). As a string it is "": never equal to anything the controller writes, so
    the planner replaces it. `what` describes it without its content (which may be a root-only file's)."""

    what: str

    def __new__(cls, what: str) -> Garbage:
        self = super().__new__(cls, "")
        self.what = what
        return self


def trusted_uids() -> frozenset[int]:
    return frozenset({0, os.geteuid()})


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _writable_by(mode: int) -> str:
    who = [w for bit, w in ((stat.S_IWGRP, "group"), (stat.S_IWOTH, "others")) if mode & bit]
    return " and ".join(who)


def dir_problem(st: os.stat_result, *, ancestor: bool) -> str | None:
    """Why a directory cannot be trusted, or None. An ancestor may be root-owned and sticky (/tmp)."""
    if st.st_uid not in trusted_uids():
        return f"is owned by uid {st.st_uid}, not root"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        if ancestor and st.st_uid == 0 and st.st_mode & stat.S_ISVTX:
            return None
        return f"is writable by {_writable_by(st.st_mode)} (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _untrusted(purpose: str, where: str, problem: str) -> Untrusted:
    return Untrusted(purpose, f"directory {where} {problem}: the controller runs as root and uses only directories root alone can change")


def _parts(path: str) -> list[str]:
    return [c for c in path.split("/") if c and c != "."]


def open_dir(path: Path | str, *, purpose: str, create: bool = False) -> int:
    """An O_RDONLY fd of directory `path`, reached from / one component at a time; each directory on the way
    is checked (`dir_problem`), links are followed only where only root could have made them (module doc).
    `create`: make missing directories, 0755. Raises `Untrusted`, or OSError (ENOENT, ENOTDIR, ...)."""
    full = os.path.abspath(path)
    todo = _parts(full)
    fd = os.open("/", _DIR)
    where = "/"
    links = 0
    try:
        _check_dir(fd, where, purpose, last=not todo)
        while todo:
            name = todo.pop(0)
            try:
                nfd = _open_child_dir(fd, name, create)
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISLNK(st.st_mode):
                    raise
                # A link in a directory only root can change, owned by root: root put it there (/var/run -> /run).
                if st.st_uid not in trusted_uids():
                    raise _untrusted(purpose, os.path.join(where, name), f"is a symbolic link owned by uid {st.st_uid}") from None
                links += 1
                if links > MAX_LINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP)) from None
                target = os.readlink(name, dir_fd=fd)
                todo = _parts(target) + todo
                if target.startswith("/"):
                    os.close(fd)
                    fd = os.open("/", _DIR)
                    where = "/"
                    _check_dir(fd, where, purpose, last=not todo)
                continue
            os.close(fd)
            fd = nfd
            where = os.path.normpath(os.path.join(where, name))
            _check_dir(fd, where, purpose, last=not todo)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _open_child_dir(fd: int, name: str, create: bool) -> int:
    try:
        return os.open(name, _DIR, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            raise
    try:
        os.mkdir(name, 0o755, dir_fd=fd)
    except FileExistsError:
        return os.open(name, _DIR, dir_fd=fd)  # made meanwhile: checked like any other
    nfd = os.open(name, _DIR, dir_fd=fd)
    os.fchmod(nfd, 0o755)  # exactly 0755 whatever the umask
    return nfd


def _check_dir(fd: int, where: str, purpose: str, *, last: bool) -> None:
    problem = dir_problem(os.fstat(fd), ancestor=not last)
    if problem is not None:
        raise _untrusted(purpose, where, problem)


@contextmanager
def directory(path: Path | str, *, purpose: str, create: bool = False) -> Iterator[int]:
    fd = open_dir(path, purpose=purpose, create=create)
    try:
        yield fd
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------------ reading


def read_bytes(path: Path, limit: int = SMALL) -> bytes | Garbage | None:
    """The content of regular file `path` (None when it or its directory is missing), else `Garbage`.

    Never follows a link at `path`, never blocks, never reads more than `limit` + 1 bytes, and opens nothing
    but a regular file (a device is not even opened). `Untrusted`/`HostError` for the directories on the way."""
    purpose = f"read {path}"
    try:
        with directory(path.parent, purpose=purpose) as dfd:
            return _read_at(dfd, path.name, limit)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise HostError(f"cannot read {path}: {e.strerror}") from e


def _read_at(dfd: int, name: str, limit: int) -> bytes | Garbage | None:
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return Garbage(_kind(st.st_mode))
    if st.st_size > limit:
        return Garbage(f"{st.st_size} bytes")
    try:
        fd = os.open(name, _READ, dir_fd=dfd)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:  # replaced by a link since the stat
            return Garbage(_kind(stat.S_IFLNK))
        raise
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode):  # replaced since the stat
            return Garbage(_kind(now.st_mode))
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            return Garbage(f"more than {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(path: Path, limit: int = SMALL) -> str | None:
    """`read_bytes` decoded (UTF-8, invalid bytes replaced); `Garbage` passes through as it is."""
    data = read_bytes(path, limit)
    if data is None or isinstance(data, Garbage):
        return data
    return data.decode("utf-8", errors="replace")


# ------------------------------------------------------------------------------------------------ writing


def write_atomic(path: Path, content: str | bytes, mode: int = 0o644, owner: tuple[int, int] | None = None) -> None:
    """The one atomic write (module doc). Missing directories are made 0755; an empty directory in the
    target's place is replaced (garbage), one with content is not (it is somebody's). `owner`: (uid, gid) the
    new file gets (a spec file keeps its owner and group)."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    name = path.name
    try:
        with directory(path.parent, purpose=f"write {path}", create=True) as dfd:
            with suppress(FileNotFoundError):
                if stat.S_ISDIR(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode):
                    os.rmdir(name, dir_fd=dfd)
            tmp = f".{name}.{os.urandom(6).hex()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
            try:
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    if owner is not None and (os.fstat(fd).st_uid, os.fstat(fd).st_gid) != owner:
                        os.fchown(fd, *owner)  # before fchmod: a chown clears set-id bits
                    os.fchmod(fd, mode)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                with suppress(OSError):
                    os.unlink(tmp, dir_fd=dfd)
                raise
            os.fsync(dfd)
    except OSError as e:
        raise HostError(f"cannot write {path}: {e.strerror}") from e


def remove(path: Path) -> None:
    """Remove `path` (a link itself, never its target); nothing to do when it or its directory is missing."""
    try:
        with directory(path.parent, purpose=f"remove {path}") as dfd:
            try:
                os.unlink(path.name, dir_fd=dfd)
            except FileNotFoundError:
                return
            os.fsync(dfd)
    except FileNotFoundError:
        return
    except OSError as e:
        raise HostError(f"cannot remove {path}: {e.strerror}") from e


def rotate(path: Path, keep: int) -> None:
    """Log rotation in `path`'s (trusted) directory: `name.{keep}` is removed, `name.{i}` becomes `name.{i+1}`,
    `name` becomes `name.1`. Renames and unlinks act on directory entries (a link is moved or removed as the
    link it is, never followed); missing ones are skipped. HostError when it cannot be done."""
    name = path.name
    try:
        with directory(path.parent, purpose=f"rotate {path}") as dfd:
            with suppress(FileNotFoundError):
                os.unlink(f"{name}.{keep}", dir_fd=dfd)
            for i in range(keep - 1, 0, -1):
                with suppress(FileNotFoundError):
                    os.rename(f"{name}.{i}", f"{name}.{i + 1}", src_dir_fd=dfd, dst_dir_fd=dfd)
            with suppress(FileNotFoundError):
                os.rename(name, f"{name}.1", src_dir_fd=dfd, dst_dir_fd=dfd)
            os.fsync(dfd)
    except OSError as e:
        raise HostError(f"cannot rotate {path}: {e.strerror}") from e


def trim(path: Path, keep: int, suffix: str) -> None:
    """Bound a cache directory of the state dir: of the entries named `*suffix` in directory `path` (trusted), the
    `keep` most recently modified stay, the others are removed (unlinked as the entries they are: a link is removed,
    never followed). A missing directory: nothing to do. HostError when it cannot be done."""
    try:
        with directory(path, purpose=f"trim {path}") as dfd:
            with os.scandir(dfd) as it:
                entries = [(e.stat(follow_symlinks=False).st_mtime_ns, e.name) for e in it if e.name.endswith(suffix)]
            if len(entries) <= keep:
                return
            for _, name in sorted(entries, reverse=True)[keep:]:
                with suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=dfd)
            os.fsync(dfd)
    except FileNotFoundError:
        return
    except OSError as e:
        raise HostError(f"cannot trim {path}: {e.strerror}") from e


def open_state_file(path: Path, flags: int, *, purpose: str) -> int:
    """An fd of regular file `path` in a trusted directory (made when missing), for the lock and the history:
    opened O_NOFOLLOW|O_NONBLOCK (O_CREAT: mode 0644), refused unless it is a regular file with one link,
    owned by root or the running uid: never truncates or appends to a file that a link points elsewhere."""
    with directory(path.parent, purpose=purpose, create=True) as dfd:
        with suppress(FileNotFoundError):  # look before opening: opening a device can have effects
            st = os.stat(path.name, dir_fd=dfd, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                raise HostError(f"cannot {purpose}: {path} is {_kind(st.st_mode)}, not a regular file")
        try:
            fd = os.open(path.name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY, 0o644, dir_fd=dfd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENXIO):  # a link; a FIFO without a reader
                st = os.stat(path.name, dir_fd=dfd, follow_symlinks=False)
                raise HostError(f"cannot {purpose}: {path} is {_kind(st.st_mode)}, not a regular file") from None
            raise
    st = os.fstat(fd)
    problem = (
        f"is {_kind(st.st_mode)}, not a regular file" if not stat.S_ISREG(st.st_mode)
        else f"has {st.st_nlink} hard links" if st.st_nlink != 1
        else f"is owned by uid {st.st_uid}, not root" if st.st_uid not in trusted_uids()
        else None
    )
    if problem is not None:
        os.close(fd)
        raise HostError(f"cannot {purpose}: {path} {problem}")
    return fd


# ------------------------------------------------------------------------------------------------ spec files


def check_spec_file(path: Path) -> None:
    """A spec is root-equivalent (its `testCommand` runs as root): refuse one that anybody but root (or the
    running uid) could have written: the file, its directory, their ancestors (a root-owned sticky one is
    fine), or a link on the way. A link to a spec is followed when root made it. `SpecError` (exit 2)."""
    try:
        _check_spec(Path(os.path.abspath(path)), 0)
    except Untrusted as e:
        raise SpecError(f"{path}: refused: {e.detail}") from None
    except OSError as e:
        raise SpecError(f"{path}: cannot read: {e.strerror}") from None


def read_spec(path: Path) -> bytes:
    """A spec file's bytes, after `check_spec_file`: the links on the way (root's, checked) resolved, then read
    like any other file (regular only, no blocking, at most SPEC bytes). `SpecError` otherwise."""
    check_spec_file(path)
    data = read_bytes(Path(os.path.realpath(path)), SPEC)
    if data is None:
        raise SpecError(f"{path}: cannot read: no such file")
    if isinstance(data, Garbage):
        raise SpecError(f"{path}: cannot read: {data.what}" + (f" (a spec is at most {SPEC} bytes)" if "bytes" in data.what else ""))
    return data


def write_spec(path: Path, content: bytes, expected: bytes) -> None:
    """Replace spec file `path` with `content` (reconcile deploy/rollback/promote): the checks of `read_spec` first
    (a link root made is followed and kept: its target is rewritten), only while the file still holds `expected`
    (an edit or a `git pull` meanwhile is not overwritten), then `write_atomic` keeping its mode, owner and group.
    `SpecError` (exit 2) when refused, `HostError` when the write fails: either way the file is unchanged."""
    check_spec_file(path)
    real = Path(os.path.realpath(path))
    with directory(real.parent, purpose=f"write spec {path}") as dfd:
        st = os.stat(real.name, dir_fd=dfd, follow_symlinks=False)
        now = _read_at(dfd, real.name, SPEC)
    if not stat.S_ISREG(st.st_mode) or now != expected:
        raise SpecError(f"{path}: changed while it was being edited; nothing written (run the command again)")
    if len(content) > SPEC:
        raise SpecError(f"{path}: the edited spec would be more than {SPEC} bytes; nothing written")
    write_atomic(real, content, stat.S_IMODE(st.st_mode), owner=(st.st_uid, st.st_gid))


def _check_spec(path: Path, depth: int) -> None:
    with directory(path.parent, purpose=f"read spec {path}") as dfd:
        st = os.stat(path.name, dir_fd=dfd, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            if st.st_uid not in trusted_uids():
                raise Untrusted("read", f"{path} is a symbolic link owned by uid {st.st_uid}")
            if depth >= MAX_LINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
            target = os.readlink(path.name, dir_fd=dfd)
            # Relative to the directory the kernel resolves it from (its real path), then walked and checked.
            _check_spec(Path(os.path.normpath(os.path.join(os.path.realpath(path.parent), target))), depth + 1)
            return
    if not stat.S_ISREG(st.st_mode):
        raise Untrusted("read", f"{path} is {_kind(st.st_mode)}, not a regular file")
    if st.st_uid not in trusted_uids():
        raise Untrusted("read", f"{path} is owned by uid {st.st_uid}, not root")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise Untrusted("read", f"{path} is writable by {_writable_by(st.st_mode)} (mode {stat.S_IMODE(st.st_mode):04o})")


def flock_within(fd: int, timeout: float) -> bool:
    """Take an exclusive flock on `fd`, waiting at most `timeout` seconds (polled every 0.1 s); False if not taken."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
