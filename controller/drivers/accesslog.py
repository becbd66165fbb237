"""Reading Nginx's JSON-lines access log from a noted position, across rotation (file I/O only): the real
`World.access_log_end` / `World.read_access_log`.

A position is (inode, offset) of the log when last read. On the next read:

- same inode, size >= offset: read on from offset;
- same inode, size < offset: truncated in place (logrotate `copytruncate`): the lines written since the last
  read are in the copy, `<log>.1`, past the old offset; then the log is read from 0;
- another inode (rename rotation; `create`): the old file is `<log>.1` with the noted inode: its rest is read,
  then the new log from 0.

Only whole lines are returned: a partial last line (Nginx is writing it, or a copy cut it) is left for the next
read. The caller tells old lines from the window's by their time, so a `<log>.1` that is not the copy it hoped
for adds nothing. The directory is reached like every file the controller reads (drivers/files: trusted
directories, no link at the file followed, regular files only, never blocking), and each read is bounded.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from controller.kernel import files
from controller.kernel.errors import HostError
from controller.world.protocol import LogPos, LogRead

READ_LIMIT = 8 * 1024 * 1024  # per file and read: a window polls about twice a second
ROTATED_SUFFIX = ".1"  # logrotate's name for the previous file (delaycompress keeps it plain)
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


def end(path: Path) -> LogPos:
    """The position at the end of the log now (the switch's): what follows is the new color's."""
    try:
        with files.directory(path.parent, purpose=f"read access log {path}") as dfd:
            try:
                st = os.stat(path.name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                return LogPos(0, 0)
    except FileNotFoundError:
        return LogPos(0, 0)
    except OSError as e:
        raise HostError(f"cannot read access log {path}: {e.strerror}") from e
    if not stat.S_ISREG(st.st_mode):
        return LogPos(0, 0)
    return LogPos(st.st_ino, st.st_size)


def read_since(path: Path, pos: LogPos, limit: int = READ_LIMIT) -> LogRead:
    """The whole lines logged since `pos`, and the position after them. HostError for an untrusted directory."""
    try:
        with files.directory(path.parent, purpose=f"read access log {path}") as dfd:
            return _read(dfd, path.name, pos, limit)
    except FileNotFoundError:
        return LogRead([], pos, f"{path.parent} is missing")
    except OSError as e:
        raise HostError(f"cannot read access log {path}: {e.strerror}") from e


def _read(dfd: int, name: str, pos: LogPos, limit: int) -> LogRead:
    fd = _open(dfd, name)
    if fd is None:
        return LogRead([], pos, f"{name} is missing or not a regular file")
    try:
        st = os.fstat(fd)
        lines: list[bytes] = []
        if pos.inode and (st.st_ino != pos.inode or st.st_size < pos.offset):
            # Rotated since the last read: first the rest of the previous file, if it is where logrotate puts it.
            old = _open(dfd, name + ROTATED_SUFFIX)
            if old is not None:
                try:
                    ost = os.fstat(old)
                    renamed = ost.st_ino == pos.inode
                    copied = st.st_ino == pos.inode  # copytruncate: the copy is a new file
                    if renamed or copied:
                        lines, _ = _lines(old, pos.offset, ost.st_size, limit)
                finally:
                    os.close(old)
            start = 0
        else:
            start = pos.offset
        more, consumed = _lines(fd, start, st.st_size, limit)
        return LogRead(lines + more, LogPos(st.st_ino, start + consumed))
    finally:
        os.close(fd)


def _open(dfd: int, name: str) -> int | None:
    try:
        fd = os.open(name, _READ, dir_fd=dfd)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:  # a link at the log: never followed
            return None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO, a device: opened without blocking, never read
        os.close(fd)
        return None
    return fd


def _lines(fd: int, start: int, size: int, limit: int) -> tuple[list[bytes], int]:
    """Whole lines in [start, size) (at most `limit` bytes), and the bytes they took."""
    if size <= start:
        return [], 0
    data = os.pread(fd, min(size - start, limit), start)
    cut = data.rfind(b"\n")
    if cut < 0:
        # No newline: a line being written, or one longer than a whole read (not ours: skip it).
        return ([], len(data)) if len(data) >= limit else ([], 0)
    return data[:cut].split(b"\n"), cut + 1
