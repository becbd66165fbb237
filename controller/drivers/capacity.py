"""Host facts for the capacity check (issue 14): /proc/meminfo, Docker's view (stats, images, info), statvfs.

Test seam: `BLUEGREEN_MEMINFO=/path/to/file` makes the controller read that file, shaped like /proc/meminfo,
instead (a real-dockerd test simulates a small host with it; docs/operations.md). It is read like every file
the controller reads (drivers/files.py: a regular file, no link, bounded, never blocking).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from controller.drivers.containers import DockerDriver
from controller.kernel import files
from controller.kernel.errors import HostError, one_line
from controller.world.facts import CapacityFact

MEMINFO_ENV = "BLUEGREEN_MEMINFO"
MEMINFO = "/proc/meminfo"
_LINE = re.compile(r"^(MemTotal|MemAvailable):\s+([0-9]{1,15}) kB\s*$", re.MULTILINE)


def meminfo_path() -> Path:
    return Path(os.environ.get(MEMINFO_ENV) or MEMINFO)


def read_meminfo(path: Path) -> tuple[int, int]:
    """(MemTotal, MemAvailable) in bytes; HostError naming the file when either is missing or unreadable."""
    text = files.read_text(path, files.SMALL)
    what = getattr(text, "what", None)
    if text is None or isinstance(what, str):
        raise HostError(f"capacity check: cannot read {path}: {'missing' if text is None else what}")
    found = {m.group(1): int(m.group(2)) * 1024 for m in _LINE.finditer(text)}
    missing = [k for k in ("MemTotal", "MemAvailable") if k not in found]
    if missing:
        raise HostError(f"capacity check: {path} has no {' or '.join(missing)} line ('<Name>: <n> kB')")
    return found["MemTotal"], found["MemAvailable"]


def disk_free(path: str) -> int | None:
    """Bytes free under `path` for everyone but root's reserve; None when it is not visible here (remote daemon)."""
    if not path.startswith("/"):
        return None
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def host_capacity(docker: DockerDriver, image: str, measure: tuple[str, ...], size_of: str | None) -> CapacityFact:
    path = meminfo_path()
    try:
        total, available = read_meminfo(path)
    except OSError as e:  # files maps what it knows; anything else still names the file
        raise HostError(f"capacity check: cannot read {path}: {one_line(e)}") from e
    usage = {name: used for name in measure if (used := docker.memory_usage(name)) is not None}
    info = docker.info()
    root = info.get("DockerRootDir")
    ncpu = info.get("NCPU")
    present = docker.image_size(image) is not None
    return CapacityFact(
        mem_total=total,
        mem_available=available,
        meminfo=str(path),
        usage=usage,
        image_present=present,
        image_size=docker.image_size(size_of) if size_of and not present else None,
        docker_root=root if isinstance(root, str) else "",
        disk_free=disk_free(root) if isinstance(root, str) and not present else None,
        cpus=ncpu if isinstance(ncpu, int) and not isinstance(ncpu, bool) and ncpu > 0 else None,
    )
