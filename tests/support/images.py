"""Test application images, built FROM scratch around Debian's static busybox (nothing is pulled).

The image (tests/images/) serves on port 8081 inside the container:

- ``GET /actuator/health``  200 ``{"status":"UP"}`` or 503 ``{"status":"DOWN"}`` depending on ``health``:
  ``up`` always UP; ``slow`` DOWN until ``slow_seconds`` after the container started, then UP;
  ``never`` always DOWN; ``crash`` UP, but the container's main process exits (code 3) after 1 s;
  ``crashloop`` UP at once, the main process exits (code 3) ``slow_seconds`` (at least 1) after each start, so
  under restart policy ``unless-stopped`` Docker restarts it again and again: a crash loop answering UP between
  restarts (build it with `crashloop_image`).
- ``GET /``                 the version, one line.
- ``GET /version``          ``"<version>"`` or ``"<version> <BLUEGREEN_COLOR>"``, one line.
- ``GET /env?NAME`` (or ``/env?name=NAME``)  200 with the raw value of env var NAME, 404 when unset;
  ``/env`` alone lists ``NAME=value`` lines.
- ``GET /sse?n=N&ms=M``     ``text/event-stream``: N events ``id: i`` / ``data: <version> i`` (i = 1..N),
  M ms apart, each sent as it is produced (defaults n=5, ms=100).
- ``GET /info``             JSON: version, color, health, slow_seconds, hostname (= short container id).

Every response but static 404s carries ``X-App-Version`` and ``X-App-Color`` headers and ``Connection: close``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any

IMAGES_DIR = Path(__file__).resolve().parent.parent / "images"
BUSYBOX = Path(os.environ.get("BLUEGREEN_BUSYBOX", "/bin/busybox"))

CONTAINER_PORT = 8081
TEST_IMAGE_LABEL = "bluegreen.test-image"
HASH_LABEL = "bluegreen.test-image.hash"
HEALTH_MODES = ("up", "slow", "never", "crash", "crashloop")
# Bump to force a rebuild when the meaning of the inputs changes without the files changing.
_FORMAT = "bgtest-image/1"
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
_TAG_RE = re.compile(r"^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$")

# The images the `test_images` fixture builds: short name -> build parameters. The served version is the name.
STANDARD_IMAGES: dict[str, dict[str, Any]] = {
    "v1": {"version": "v1", "health": "up"},
    "v2": {"version": "v2", "health": "up"},
    "slow": {"version": "slow", "health": "slow", "slow_seconds": 3},
    "never": {"version": "never", "health": "never"},
    "crash": {"version": "crash", "health": "crash"},
}


class TestImageError(RuntimeError):
    """The test image cannot be built (missing static busybox, build failure)."""

    __test__ = False  # not a pytest test class


class BusyboxMissingError(TestImageError):
    """No static busybox on this machine: the environment is not set up (scripts/setup.sh)."""


def _is_static_elf(path: Path) -> bool:
    """True when `path` is an ELF executable without a PT_INTERP program header (statically linked)."""
    with path.open("rb") as f:
        head = f.read(64)
        if len(head) < 64 or head[:4] != b"\x7fELF":
            return False
        is64 = head[4] == 2
        endian = "<" if head[5] == 1 else ">"
        if is64:
            (phoff,) = struct.unpack_from(endian + "Q", head, 0x20)
            phentsize, phnum = struct.unpack_from(endian + "HH", head, 0x36)
        else:
            (phoff,) = struct.unpack_from(endian + "I", head, 0x1C)
            phentsize, phnum = struct.unpack_from(endian + "HH", head, 0x2A)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    for i in range(phnum):
        (p_type,) = struct.unpack_from(endian + "I", table, i * phentsize)
        if p_type == 3:  # PT_INTERP: needs a dynamic loader that a FROM scratch image does not have
            return False
    return True


@functools.lru_cache(maxsize=8)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def busybox_path() -> Path:
    """The static busybox to put in the image; TestImageError with the fix when it is missing or dynamic."""
    path = BUSYBOX.resolve()
    if not path.is_file():
        raise BusyboxMissingError(
            f"{BUSYBOX} not found: install Debian's busybox-static (scripts/setup.sh does)"
        )
    if not _is_static_elf(path):
        raise BusyboxMissingError(
            f"{BUSYBOX} is not a static executable: install Debian's busybox-static (not busybox), "
            "or point BLUEGREEN_BUSYBOX at a static busybox"
        )
    return path


def _context_files() -> list[Path]:
    files = []
    for p in sorted(IMAGES_DIR.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts and p.name != "busybox":
            files.append(p)
    return files


def build_args(version: str, health: str = "up", slow_seconds: int = 0) -> dict[str, str]:
    if not _VERSION_RE.match(version):
        raise ValueError(f"version {version!r} must match {_VERSION_RE.pattern}")
    if health not in HEALTH_MODES:
        raise ValueError(f"health {health!r} must be one of {HEALTH_MODES}")
    if not isinstance(slow_seconds, int) or isinstance(slow_seconds, bool) or not 0 <= slow_seconds <= 3600:
        raise ValueError(f"slow_seconds {slow_seconds!r} must be an int in [0, 3600]")
    return {"VERSION": version, "HEALTH": health, "SLOW_SECONDS": str(slow_seconds)}


def build_inputs_hash(version: str, health: str = "up", slow_seconds: int = 0) -> str:
    """sha256 over everything that goes into the image: Dockerfile, scripts (with modes), busybox, build args."""
    h = hashlib.sha256()
    h.update(_FORMAT.encode())
    h.update(json.dumps(build_args(version, health, slow_seconds), sort_keys=True).encode())
    for p in _context_files():
        st = p.stat()
        h.update(b"\0" + p.relative_to(IMAGES_DIR).as_posix().encode() + b"\0")
        h.update(b"x" if st.st_mode & 0o111 else b"-")
        h.update(p.read_bytes())
    bb = busybox_path()
    st = bb.stat()
    h.update(b"\0busybox\0" + _file_digest(str(bb), st.st_size, st.st_mtime_ns).encode())
    return h.hexdigest()


def build_test_image(
    client: Any, tag: str, *, version: str, health: str = "up", slow_seconds: int = 0
) -> str:
    """Build (or reuse) test image `tag` and return its image id.

    Reused when an image with that tag exists and carries the hash of the current build inputs; otherwise
    built with the docker SDK from a temporary context (tests/images/ plus a copy of the static busybox).
    Labels: ``bluegreen.test-image=1``, ``bluegreen.test-image.hash=<sha256>``, and version/health/slow-seconds.
    """
    import docker.errors

    if not _TAG_RE.match(tag):
        raise ValueError(f"tag {tag!r} is not a valid lowercase image reference (e.g. bgtest:v1)")
    args = build_args(version, health, slow_seconds)
    digest = build_inputs_hash(version, health, slow_seconds)
    old_id: str | None = None
    try:
        existing = client.images.get(tag)
        if (existing.labels or {}).get(HASH_LABEL) == digest:
            return str(existing.id)
        old_id = str(existing.id)
    except docker.errors.ImageNotFound:
        pass

    labels = {
        TEST_IMAGE_LABEL: "1",
        HASH_LABEL: digest,
        f"{TEST_IMAGE_LABEL}.version": version,
        f"{TEST_IMAGE_LABEL}.health": health,
        f"{TEST_IMAGE_LABEL}.slow-seconds": str(slow_seconds),
    }
    with tempfile.TemporaryDirectory(prefix="bgtest-ctx-") as ctx:
        shutil.copytree(
            IMAGES_DIR, ctx, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "busybox")
        )
        shutil.copy2(busybox_path(), Path(ctx) / "busybox")
        os.chmod(Path(ctx) / "busybox", 0o755)
        try:
            image, _log = client.images.build(
                path=ctx, buildargs=args, tag=tag, labels=labels, rm=True, forcerm=True, pull=False
            )
        except docker.errors.BuildError as e:
            log = "".join(str(chunk.get("stream") or chunk.get("error") or "") for chunk in e.build_log)
            raise TestImageError(f"building {tag} failed: {e.msg}\n{log[-4000:]}") from e
    if old_id and old_id != image.id:
        # The tag moved: drop the stale image unless something still uses it.
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(old_id, noprune=False)
    return str(image.id)


def crashloop_image(client: Any, seconds: int, prefix: str = "bgtest") -> str:
    """Build (or reuse) ``<prefix>:crashloop<seconds>``, serving version ``crashloop``; returns the tag."""
    tag = f"{prefix}:crashloop{seconds}"
    build_test_image(client, tag, version="crashloop", health="crashloop", slow_seconds=seconds)
    return tag


def slow_image(client: Any, seconds: int, prefix: str = "bgtest") -> str:
    """Build (or reuse) ``<prefix>:slow<seconds>``, serving version ``slow``, UP `seconds` after start; returns the tag."""
    tag = f"{prefix}:slow{seconds}"
    build_test_image(client, tag, version="slow", health="slow", slow_seconds=seconds)
    return tag


def pin_images(client: Any, tags: list[str], labels: dict[str, str]) -> None:
    """Create (never start) one container per tag, so that `spec.keepImages` pruning, which never removes an image
    a container uses, leaves these shared images alone while the session runs. `labels` (the session label)
    let the session's clean-up remove the pins."""
    for tag in tags:
        client.containers.create(tag, labels={**labels, "bluegreen.test-pin": "1"})


def build_standard_images(client: Any, prefix: str = "bgtest") -> dict[str, str]:
    """Build every image in STANDARD_IMAGES as ``<prefix>:<name>``; returns name -> tag."""
    tags: dict[str, str] = {}
    for name, params in STANDARD_IMAGES.items():
        tag = f"{prefix}:{name}"
        build_test_image(client, tag, **params)
        tags[name] = tag
    return tags


def remove_repositories(client: Any, names: list[str]) -> None:
    """Remove every image of these repositories, and every container that uses one (a test's own images)."""
    import contextlib

    import docker.errors

    for r in names:
        images = client.api.images(name=r)
        ours = {img["Id"] for img in images}
        for c in client.api.containers(all=True):
            if c.get("ImageID") in ours:
                client.api.remove_container(c["Id"], force=True)
        for img in images:
            with contextlib.suppress(docker.errors.NotFound):
                client.api.remove_image(img["Id"], force=True)
