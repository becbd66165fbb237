"""A real Redis test image (issue 13), built FROM scratch around Debian's redis-server and redis-cli and the shared
libraries `ldd` lists for them, plus static busybox (`/bin/busybox sh|sleep|cp`: a backup command that takes a
while and copies the RDB file). Nothing is pulled. Tag `bgtest-redis:<hash of the inputs>`, reused when present.

`scripts/setup.sh` installs the redis-server package; without it the tests that need the image skip (or fail
with BLUEGREEN_REQUIRE_REAL=1 as the other real-part fixtures do).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

BINARIES = ("/usr/bin/redis-server", "/usr/bin/redis-cli")
BUSYBOX = Path(os.environ.get("BLUEGREEN_BUSYBOX", "/bin/busybox"))
_LIB_RE = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x")
_FORMAT = "bgtest-redis/1"
DOCKERFILE = 'FROM scratch\nCOPY root/ /\nCMD ["/usr/bin/redis-server", "--dir", "/data"]\n'


class RedisImageUnavailable(RuntimeError):
    pass


def _libraries(binary: str) -> list[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True, timeout=30).stdout
    return sorted({m.group(1) for m in _LIB_RE.finditer(out)})


def _inputs() -> list[tuple[str, Path]]:
    """(path in the image, file on the host) for every file the image holds."""
    files: list[tuple[str, Path]] = []
    for b in BINARIES:
        if not Path(b).exists():
            raise RedisImageUnavailable(f"{b} missing (run scripts/setup.sh: it installs redis-server)")
        files.append((b, Path(b).resolve()))
        files += [(lib, Path(lib).resolve()) for lib in _libraries(b)]
    if not BUSYBOX.exists():
        raise RedisImageUnavailable(f"{BUSYBOX} missing (busybox-static)")
    files.append(("/bin/busybox", BUSYBOX))
    return sorted(set(files))


def build_redis_image(client: Any) -> str:
    files = _inputs()
    h = hashlib.sha256(_FORMAT.encode() + DOCKERFILE.encode())
    for dest, src in files:
        st = src.stat()
        h.update(f"{dest}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())

    def context(tmp: Path) -> str:
        root = tmp / "root"
        for dest, src in files:
            target = root / dest.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
        for d in ("data", "tmp"):
            (root / d).mkdir(mode=0o1777, exist_ok=True)
            os.chmod(root / d, 0o1777)
        return DOCKERFILE

    return _built(client, f"bgtest-redis:{h.hexdigest()[:12]}", "redis", context)


def build_redis_volume_image(client: Any) -> str:
    """The Redis image plus `VOLUME /data`, as the official redis, mongo and qdrant images declare their data
    directory: a container made without a volume at /data gets an anonymous one. Built FROM the local Redis image."""
    base = build_redis_image(client)
    return _built(client, f"bgtest-redis-volume:{base.rpartition(':')[2]}", "redis-volume", lambda _: f"FROM {base}\nVOLUME /data\n")


def _built(client: Any, tag: str, kind: str, context: Callable[[Path], str]) -> str:
    """`tag`, built (nothing pulled) unless present: `context` fills the build directory and gives the Dockerfile."""
    try:
        client.images.get(tag)
        return tag
    except Exception:  # not built yet (docker.errors.ImageNotFound)
        pass
    with tempfile.TemporaryDirectory(prefix=f"bgtest-{kind}-") as tmp:
        (Path(tmp) / "Dockerfile").write_text(context(Path(tmp)))
        client.images.build(path=tmp, tag=tag, labels={"bluegreen.test-image": kind}, rm=True, forcerm=True, pull=False)
    return tag
