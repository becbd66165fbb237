"""verify.prometheus (issue 11 item 1): the verdict on an instant query's answer, the driver against hostile HTTP
answers, and a real Prometheus (Debian's binary on loopback) deciding a post-switch window.
(controller/world/verification.py, controller/app/steps/verify.py, controller/drivers/prometheus.py)"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.drivers.prometheus import PromClient
from controller.spec.app import VerifySpec
from controller.store.state import StateStore
from controller.world.verification import FAILED_REASON, Counts, PromAnswer, judge, prom_answer, render_query
from tests.factories import make_app
from tests.fakes import CheckedWorld, reconciler, world_for
from tests.support.net import free_port
from tests.support.promserver import DRIBBLE, ERROR, HUGE, NOT_JSON, REDIRECT, prom_server, vector

PROM = {"url": "http://127.0.0.1:9", "query": "q", "max": 1}
SPEC = VerifySpec(windowSeconds=4, minRequests=4, healthFailures=2, prometheus=PROM)

# ------------------------------------------------------------------------------------------- the verdict


def test_an_answer_above_max_fails_the_window_with_the_figure() -> None:
    v = judge(SPEC, Counts(), 1.0, 10.0, PromAnswer(5.0, "5"))
    assert v.state == "failed" and v.figures.startswith("prometheus query above max (5 > 1)") and "prometheus 5 (max 1)" in v.figures
    # At max is not above it; the window stays open, then passes at its deadline.
    assert judge(SPEC, Counts(), 1.0, 10.0, PromAnswer(1.0, "1")).state == "open"
    passed = judge(SPEC, Counts(), 10.0, 10.0, PromAnswer(0.0, "0"))
    assert passed.state == "passed" and "prometheus 0 (max 1)" in passed.figures


def test_an_answer_that_is_not_one_number_is_reported_and_does_not_fail_the_window() -> None:
    for detail in ("connection refused", "no sample (empty vector)", "HTTP 400: query failed: bad_data: x"):
        v = judge(SPEC, Counts(), 10.0, 10.0, PromAnswer(None, detail))
        assert v.state == "passed" and f"prometheus not judged ({detail})" in v.figures
    assert "prometheus not asked yet" in judge(SPEC, Counts(), 1.0, 10.0, None).figures
    # The other thresholds still fail it.
    assert judge(SPEC, Counts(health_failures=2), 1.0, 10.0, PromAnswer(None, "connection refused")).state == "failed"
    # Without verify.prometheus the figures are what they were.
    plain = VerifySpec(windowSeconds=4, minRequests=4, healthFailures=2)
    assert "prometheus" not in judge(plain, Counts(), 1.0, 10.0, PromAnswer(9.0, "9")).figures
    assert judge(plain, Counts(), 1.0, 10.0, PromAnswer(9.0, "9")).state == "open"


def test_only_one_number_is_a_value() -> None:
    assert prom_answer({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "2.5"]}}) == PromAnswer(2.5, "2.5")
    assert prom_answer(vector("+Inf")).value == float("inf")  # above any max
    bad: list[tuple[Any, str]] = [
        (vector(), "no sample (empty vector)"),
        (vector("1", "2"), "2 samples, not one number"),
        (vector("NaN"), "NaN, not a number"),
        (vector("five"), "malformed sample"),
        ({"status": "success", "data": {"resultType": "vector", "result": [{"value": [1.0, 5]}]}}, "malformed sample"),
        ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "result type 'matrix', not one number"),
        ({"status": "error", "errorType": "bad_data", "error": "parse error"}, "query failed: bad_data: parse error"),
        ([1, 2], "not a Prometheus answer"),
    ]
    for doc, detail in bad:
        assert prom_answer(doc) == PromAnswer(None, detail), doc


def test_placeholders_are_replaced_literally_and_promql_braces_stay() -> None:
    q = 'sum(rate(http_requests_total{app="{app}",color="{color}",rev="{revision}",code=~"5.."}[1m]))'
    assert render_query(q, "shop", "green", "abc123") == 'sum(rate(http_requests_total{app="shop",color="green",rev="abc123",code=~"5.."}[1m]))'


# ------------------------------------------------------------------------------------------- the driver, hostile answers


@pytest.fixture(scope="module")
def client() -> Iterator[PromClient]:
    c = PromClient()
    yield c
    c.close()


def test_hostile_answers_end_within_the_timeout_and_are_not_a_number(client: PromClient) -> None:
    with prom_server({}) as elsewhere, prom_server(
        {"huge": HUGE, "dribble": DRIBBLE, "html": NOT_JSON, "bad": ERROR, "moved": REDIRECT + elsewhere.url + "/api/v1/query?query=x"}
    ) as server:
        cases = {
            "huge": "HTTP 200 with a body over 64 KiB: not one number",
            "html": "HTTP 200: not JSON",
            "bad": "HTTP 400: query failed: bad_data: parse error at char 3",
            "moved": "HTTP 302: redirect not followed",
            "dribble": "HTTP 200 but the body did not end within 1s (",
        }
        for query, detail in cases.items():
            t0 = time.monotonic()
            a = client.query(server.url, query, 1.0)
            assert a.value is None and a.detail.startswith(detail), (query, a)
            assert time.monotonic() - t0 < 2.0, query  # the dribble is cut at the deadline, not after 5 s
        assert elsewhere.hits == {}  # the redirect's target was never asked


def test_credentials_in_the_url_are_refused_before_any_request_and_never_quoted(client: PromClient) -> None:
    with prom_server({"vector(5)": vector("5")}) as server:
        a = client.query(server.url.replace("//", "//admin:s3cret@"), "vector(5)", 1.0)
        assert a == PromAnswer(None, "credentials in the Prometheus URL refused") and server.hits == {}
        # A URL that is no URL at all: no exception, no echo of it.
        for url in ("ftp://s3cret.example/", "http://[s3cret"):
            b = client.query(url, "vector(5)", 1.0)
            assert b.value is None and "s3cret" not in b.detail


# ------------------------------------------------------------------------------------------- a real Prometheus


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's prometheus on a free loopback port, no scrape targets (constant queries need none)."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed")
    tmp = tmp_path_factory.mktemp("prom")
    (tmp / "prometheus.yml").write_text("global:\n  scrape_interval: 15s\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"]
    with (tmp / "log").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp / "log").read_text()[-2000:]
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class RealPrometheus(CheckedWorld):
    """The in-memory host, with verify.prometheus asked of a real Prometheus through the real driver."""

    client: PromClient = field(default_factory=PromClient)

    def query_prometheus(self, url: str, query: str, timeout: float) -> PromAnswer:
        self.prom_queries.append(query)
        return self.client.query(url, query, timeout)


def test_real_prometheus_answers_one_number_and_a_query_error(client: PromClient, prometheus: str) -> None:
    assert client.query(prometheus, "vector(5)", 3) == PromAnswer(5.0, "5")
    assert client.query(prometheus, "scalar(vector(0.25))", 3) == PromAnswer(0.25, "0.25")
    assert client.query(prometheus, "vector(1) or label_replace(vector(2), 'x', 'y', '', '')", 3).detail == "2 samples, not one number"
    bad = client.query(prometheus, "sum(", 3)
    assert bad.value is None and bad.detail.startswith("HTTP 400: query failed: bad_data:")


def _window(tmp_path: Path, query: str, url: str) -> tuple[str, RealPrometheus, StateStore, Any]:
    base = world_for(make_app())
    w = RealPrometheus(images=base.images)
    w.include_paths |= base.include_paths
    rec = reconciler(w, tmp_path / "s")
    assert rec.reconcile(make_app()).result == "converged"
    verify = {"windowSeconds": 3, "accessLog": str(tmp_path / "none.log"), "prometheus": {"url": url, "query": query, "max": 1}}
    v2 = make_app(image="dialogue:2", activeColor="green", verify=verify)
    r = rec.reconcile(v2)
    w.client.close()
    return r.result, w, StateStore(tmp_path / "s"), v2


def test_a_real_prometheus_answer_above_max_switches_back(tmp_path: Path, prometheus: str) -> None:
    result, w, store, v2 = _window(tmp_path, "vector(5) # {app} {color} {revision}", prometheus)
    assert result == "degraded" and w.routed("dialogue") == ["127.0.0.1:18081"] and w.violations == []
    assert w.prom_queries[0] == f"vector(5) # dialogue green {v2.revision('green')}"
    mem = store.load_memory("dialogue")
    failed = mem.failures[v2.revision("green")]
    assert failed.reason == FAILED_REASON and "prometheus query above max (5 > 1)" in failed.message


def test_a_real_prometheus_answer_within_max_passes_and_an_error_alone_does_not_fail(tmp_path: Path, prometheus: str) -> None:
    result, w, store, _ = _window(tmp_path / "ok", "vector(0)", prometheus)
    assert result == "converged" and w.routed("dialogue") == ["127.0.0.1:18082"]
    window = store.load_window("dialogue")
    assert window is not None and window.state == "passed" and "prometheus 0 (max 1)" in window.figures
    result, w, store, _ = _window(tmp_path / "err", "sum(", prometheus)
    window = store.load_window("dialogue")
    assert result == "converged" and window is not None and window.state == "passed"
    assert "prometheus not judged (HTTP 400: query failed: bad_data:" in window.figures
