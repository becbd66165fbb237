"""Test images for post-switch verification: the standard test app (tests/images/) with one behaviour changed.

Tagged ``bgtest-verify:<variant>`` (never the shared ``bgtest:*`` tags), built from a temporary copy of
tests/images/ with the CGI scripts of tests/support/cgi/ put over the app's, and reused while the inputs hash
is unchanged:

- ``flaky``: health always UP, ``/`` answers 500 for every second request (a broken endpoint behind a green health).
- ``sick``:  ``/`` fine, health UP for 3 s after the container starts, then 503 (a leak that kills it soon after).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .images import HASH_LABEL, IMAGES_DIR, TEST_IMAGE_LABEL, build_args, build_inputs_hash, busybox_path

CGI = Path(__file__).resolve().parent / "cgi"
VARIANTS: dict[str, dict[str, str]] = {
    "flaky": {"www/cgi-bin/index": "flaky-index"},
    "sick": {"www/cgi-bin/health": "sick-health"},
}


def verify_image(client: Any, variant: str) -> str:
    """Build (or reuse) ``bgtest-verify:<variant>``; returns the tag."""
    import docker.errors

    tag = f"bgtest-verify:{variant}"
    overrides = VARIANTS[variant]
    args = build_args(variant)
    h = hashlib.sha256(build_inputs_hash(variant).encode())
    for dest, src in sorted(overrides.items()):
        h.update(dest.encode() + b"\0" + (CGI / src).read_bytes())
    digest = h.hexdigest()
    try:
        if (client.images.get(tag).labels or {}).get(HASH_LABEL) == digest:
            return tag
    except docker.errors.ImageNotFound:
        pass
    with tempfile.TemporaryDirectory(prefix="bgtest-verify-ctx-") as ctx:
        shutil.copytree(IMAGES_DIR, ctx, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "busybox"))
        for dest, src in overrides.items():
            shutil.copy2(CGI / src, Path(ctx) / dest)
            os.chmod(Path(ctx) / dest, 0o755)
        shutil.copy2(busybox_path(), Path(ctx) / "busybox")
        os.chmod(Path(ctx) / "busybox", 0o755)
        client.images.build(
            path=ctx, buildargs=args, tag=tag, labels={TEST_IMAGE_LABEL: "1", HASH_LABEL: digest}, rm=True, forcerm=True, pull=False
        )
    return tag
