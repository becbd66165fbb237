"""A short run of bench/bench_cutover.py (3 cutovers per mode, not timed): zero failed requests, every stream intact.

Through the shipped site with Basic Auth, under bounded loopback load (4 wrk keep-alive connections that never
retry, 2 retrying keep-alive clients, 2 fresh-connection clients; ~250 req/s), the real controller cuts over
with standby: stop (start the idle color, switch, drain the old one, stop it), SSE streams opened before each.
- flag mode: no failure for any client kind.
- reload mode: none for clients that retry an idempotent request or open fresh connections (a reload closes
  idle keep-alive connections, which wrk does not retry: that is what flag mode is for).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from bench.bench_cutover import run_mode
from tests.support.nginx import NginxInstance

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mode", ["flag", "reload"])
def test_cutovers_under_load_fail_no_request(
    mode: str, tmp_path: Path, docker_client: Any, test_images: dict[str, str], nginx: NginxInstance
) -> None:
    if shutil.which("wrk") is None:
        pytest.fail("wrk is not installed (scripts/setup.sh installs it)")
    r = run_mode(mode, 3, tmp_path, test_images, docker_client, gap=1.0, streams_per_cutover=2, log=lambda m: None)
    s = r.summary()
    assert not r.errors, r.errors
    for kind in ("keepalive", "fresh") if mode == "reload" else ("wrk", "keepalive", "fresh"):
        assert r.kinds[kind].requests > 50, s
        assert r.failures(kind) == 0, (s["clients"][kind], _failed(r, kind))
    assert s["streams"] == 6 and s["streams_intact"] == 6, s


def _failed(r: Any, kind: str) -> list[str]:
    """Each failed request of `kind`: its status (0: no HTTP answer) and when, against the cutover windows."""
    out = []
    for x in r.kinds[kind].samples:
        if not 200 <= x.status < 300:
            near = min(r.windows, key=lambda w: abs(x.at - w[0]), default=(x.at, x.at))
            when = f"{x.at - near[0]:+.3f}s from a cutover's start ({near[1] - near[0]:.2f}s long)"
            out.append(f"status {x.status} after {x.seconds:.3f}s, {when}" + (f": {x.error}" if x.error else ""))
    return out
