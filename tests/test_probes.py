"""Health and route probes against real containers that answer slowly or without end (issue 10 item 6).

tests/support/cgi/trickle, copied into a v1 test container as /cgi-bin/trickle, answers 200 {"status":"UP"} and then dribbles a byte every 200 ms (each read
is far quicker than the read timeout, the answer never completes) or streams without end; /sse is an endless
text/event-stream. Every probe must return within its timeout plus a little slack, say unhealthy and why,
and not grow memory with the stream.
"""

from __future__ import annotations

import io
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.drivers.probes import BODY_CAP, Prober
from controller.world.protocol import HealthResult, RouteProbe
from tests.support.containers import RunningContainer

TIMEOUT = 1.5
SLACK = 1.5  # thread start, container-side scheduling on a loaded 2-core host


@pytest.fixture
def prober() -> Iterator[Prober]:
    p = Prober()
    yield p
    p.close()


TRICKLE = Path(__file__).resolve().parent / "support" / "cgi" / "trickle"


@pytest.fixture
def app(run_container: Callable[..., RunningContainer], test_images: dict[str, str]) -> RunningContainer:
    c = run_container(test_images["v1"], env={"BGTEST_QUIET": "1"})
    # Copied into the running container rather than built into tests/images: the bgtest:* tags are shared
    # by every checkout on this dockerd, and a different build context would rebuild them under the others.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("trickle")
        data = TRICKLE.read_bytes()
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
    assert c.container.put_archive("/www/cgi-bin", buf.getvalue())
    c.wait_ready()
    return c


def _timed(call: Callable[[], Any], limit: float) -> tuple[Any, float]:
    """Run `call` in a thread: the test itself must not hang when the probe does (the bug)."""
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(call()), daemon=True)
    start = time.monotonic()
    t.start()
    t.join(limit + 10)
    elapsed = time.monotonic() - start
    assert out, f"the probe did not return within {limit + 10:g}s"
    return out[0], elapsed


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/cgi-bin/trickle?mode=drip&ms=200", "did not end within"),
        ("/cgi-bin/trickle?mode=stream", f"over {BODY_CAP // 1024} KiB"),
        ("/sse?n=100000&ms=100", "did not end within"),
    ],
)
def test_health_probe_ends_within_its_timeout_and_a_never_ending_answer_is_unhealthy(
    prober: Prober, app: RunningContainer, path: str, why: str
) -> None:
    res, elapsed = _timed(lambda: prober.health(app.base_url + path, 200, TIMEOUT), TIMEOUT)
    assert isinstance(res, HealthResult)
    assert elapsed < TIMEOUT + SLACK, f"{path}: took {elapsed:.1f}s for a {TIMEOUT}s timeout ({res})"
    assert res.ok is False and why in res.detail, res


def test_health_probe_still_passes_and_fails_normal_answers(prober: Prober, app: RunningContainer) -> None:
    res = prober.health(app.base_url + "/actuator/health", 200, TIMEOUT)
    assert res == HealthResult(True, "HTTP 200 UP")
    res = prober.health(app.base_url + "/no-such-page", 200, TIMEOUT)
    assert res.ok is False and res.detail == "HTTP 404"
    # A short streaming answer that ends in time is judged on its content as before.
    res = prober.health(app.base_url + "/sse?n=2&ms=10", 200, TIMEOUT)
    assert res.ok is True


def test_route_probe_ends_within_its_timeout(prober: Prober, app: RunningContainer) -> None:
    # The route check only needs the status and the upstream header: an endless body must not hold it.
    res, elapsed = _timed(lambda: prober.route(app.base_url + "/cgi-bin/trickle?mode=drip&ms=200", TIMEOUT), TIMEOUT)
    assert isinstance(res, RouteProbe)
    assert elapsed < TIMEOUT + SLACK and res.reachable is True and res.detail.startswith("HTTP 200"), (elapsed, res)
    res, elapsed = _timed(lambda: prober.route(app.base_url + "/cgi-bin/trickle?mode=stream", TIMEOUT), TIMEOUT)
    assert elapsed < TIMEOUT + SLACK and res.reachable is True, (elapsed, res)


def test_plain_http_probes_load_no_ca_bundle_and_prometheus_shares_the_one_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 18 item 8: the CA bundle (tens of ms a cron run) is loaded only for an https:// URL, once."""
    import ssl

    from controller.drivers.host import HostWorld
    from tests.support.promserver import prom_server

    loads: list[object] = []
    real = ssl.SSLContext.load_verify_locations

    def counting(self: ssl.SSLContext, *a: Any, **kw: Any) -> None:
        loads.append(a or kw)
        real(self, *a, **kw)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counting)
    world = HostWorld()
    with prom_server({"": {"status": "UP"}}) as server:  # any GET without a query: 200 {"status": "UP"}
        try:
            url = f"{server.url}/actuator/health"
            assert [world.probe_health(url, 200, 2.0).ok for _ in range(3)] == [True] * 3
            assert loads == []  # http: no TLS set up at all
            assert world.prometheus._client is world.probes.client  # one client a run
            tls = url.replace("http://", "https://")  # the server speaks no TLS: the handshake fails
            assert [world.probe_health(tls, 200, 2.0).ok for _ in range(2)] == [False, False]
            assert len(loads) == 1  # the https transport (certifi's bundle) made once, at the first https:// request
            assert world.probe_health(url, 200, 2.0).ok
        finally:
            world.close()
