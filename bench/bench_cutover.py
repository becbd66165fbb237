#!/usr/bin/env python3
"""Zero-downtime benchmark: loopback load through the shipped Nginx site (Basic Auth) while cutovers happen.

Three ways of cutting over, run one after the other in the same run, under the same load:

- flag     the real controller (`python -m controller --once` after editing the spec), nginx.switch: flag
- reload   the real controller, nginx.switch: reload
- naive    what a deploy script does: stop the old container, start the new one, switch the include, reload

Each does N alternating cutovers between bgtest:v1 (blue) and bgtest:v2 (green), with standby: stop (so every
cutover starts the idle color, switches, drains the old one and stops it). Before each cutover, SSE streams are
opened; a stream is intact when it delivered every event, in order, from one version.

Load (bounded: fixed request rates, loopback only, a fixed duration):
- wrk        keep-alive, never retries (wrk -c4 with a per-request delay; its socket errors are its failures)
- keepalive  Python keep-alive clients that retry an idempotent GET once when a reused connection fails, as
             HTTP allows and browsers do
- fresh      Python clients opening a new connection for every request

Reported per mode and client kind: requests, non-2xx, connection errors, p50/p99 latency in steady state and
during cutovers (from the start of a cutover to 1 s after it ended), streams intact.

    python bench/bench_cutover.py                 # 20 cutovers per mode (about 6 minutes)
    python bench/bench_cutover.py --cutovers 3 --modes flag,reload --json out.json
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
import httpx  # noqa: E402

from controller.app.routing import render_include  # noqa: E402
from controller.spec.app import BlueGreenApp  # noqa: E402
from tests.support.controller_run import run_reconcile, write_spec  # noqa: E402
from tests.support.images import build_standard_images  # noqa: E402
from tests.support.net import free_port  # noqa: E402
from tests.support.nginx import NginxInstance  # noqa: E402
from tests.support.shipped_site import start_shipped  # noqa: E402

USER, PASSWORD = "bench", "bench-password"
AUTH_HEADER = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
LABEL_BENCH = "bluegreen.test"
KINDS = ("wrk", "keepalive", "fresh")


@dataclass
class Sample:
    at: float
    seconds: float
    status: int  # 0 = connection error
    error: str = ""  # what the client saw when there was no HTTP answer (the retry's, after a retry)


@dataclass
class KindStats:
    requests: int = 0
    non_2xx: int = 0
    conn_errors: int = 0
    retried: int = 0
    samples: list[Sample] = field(default_factory=list)


@dataclass
class StreamResult:
    intact: bool
    detail: str


@dataclass
class ModeResult:
    mode: str
    cutovers: int
    seconds: float
    kinds: dict[str, KindStats]
    streams: list[StreamResult]
    windows: list[tuple[float, float]]
    cutover_seconds: list[float]
    wrk_latency: dict[str, float]
    errors: list[str]

    def latency(self, kind: str, during: bool) -> tuple[float, float]:
        xs = [
            s.seconds * 1000
            for s in self.kinds[kind].samples
            if s.status and any(a <= s.at <= b + 1.0 for a, b in self.windows) == during
        ]
        if len(xs) < 2:
            return (float("nan"), float("nan"))
        q = statistics.quantiles(xs, n=100)
        return (statistics.median(xs), q[98])

    def failures(self, kind: str) -> int:
        k = self.kinds[kind]
        return k.non_2xx + k.conn_errors

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mode": self.mode,
            "cutovers": self.cutovers,
            "seconds": round(self.seconds, 1),
            "cutover_seconds_p50": round(statistics.median(self.cutover_seconds), 2) if self.cutover_seconds else None,
            "req_per_s": round(sum(k.requests for k in self.kinds.values()) / self.seconds, 1) if self.seconds else 0.0,
            "streams": len(self.streams),
            "streams_intact": sum(s.intact for s in self.streams),
            "stream_failures": [s.detail for s in self.streams if not s.intact][:5],
            "errors": self.errors[:5],
            "clients": {},
        }
        for kind, k in self.kinds.items():
            if kind == "wrk":
                steady = during = (self.wrk_latency.get("p50", float("nan")), self.wrk_latency.get("p99", float("nan")))
            else:
                steady, during = self.latency(kind, False), self.latency(kind, True)
            out["clients"][kind] = {
                "requests": k.requests,
                "non_2xx": k.non_2xx,
                "conn_errors": k.conn_errors,
                "retried": k.retried,
                "p50_ms_steady": round(steady[0], 1),
                "p99_ms_steady": round(steady[1], 1),
                "p50_ms_cutover": round(during[0], 1),
                "p99_ms_cutover": round(during[1], 1),
            }
        return out


# ----------------------------------------------------------------------------------------------- load


class PythonClient(threading.Thread):
    """GET / at a fixed rate until `stop`; keep-alive with one retry on a failed reused connection, or fresh."""

    def __init__(self, url: str, kind: str, rate: float, stop: threading.Event, stats: KindStats, lock: threading.Lock) -> None:
        super().__init__(daemon=True)
        self.url, self.kind, self.period, self.stop, self.stats, self.lock = url, kind, 1.0 / rate, stop, stats, lock

    def run(self) -> None:
        headers = {"Authorization": AUTH_HEADER}
        if self.kind == "fresh":
            headers["Connection"] = "close"
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1 if self.kind == "keepalive" else 0)
        client = httpx.Client(trust_env=False, timeout=10, limits=limits, headers=headers)
        nxt = time.monotonic()
        try:
            while not self.stop.is_set():
                t0 = time.monotonic()
                status, retried, error = self._once(client)
                dt = time.monotonic() - t0
                with self.lock:
                    st = self.stats
                    st.requests += 1
                    st.retried += retried
                    if status == 0:
                        st.conn_errors += 1
                    elif not 200 <= status < 300:
                        st.non_2xx += 1
                    st.samples.append(Sample(time.time(), dt, status, error))
                nxt += self.period
                self.stop.wait(max(0.0, nxt - time.monotonic()))
        finally:
            client.close()

    def _once(self, client: httpx.Client) -> tuple[int, int, str]:
        """(status or 0, whether it was retried, what failed when there was no answer)."""
        try:
            return client.get(self.url).status_code, 0, ""
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as e:
            if self.kind != "keepalive":
                return 0, 0, repr(e)
            # The server closed an idle reused connection (an nginx reload does): RFC 9110 §9.2.2 allows
            # retrying an idempotent request; browsers do it automatically.
            try:
                return client.get(self.url).status_code, 1, ""
            except httpx.HTTPError as again:
                return 0, 1, f"{e!r}, then {again!r}"
        except httpx.HTTPError as e:
            return 0, 0, repr(e)


WRK_LUA = """
wrk.headers["Authorization"] = "%s"
function delay() return %d end
done = function(summary, latency, requests)
  io.write(string.format("BENCHJSON {\\"requests\\": %%d, \\"connect\\": %%d, \\"read\\": %%d, \\"write\\": %%d, \\"timeout\\": %%d, \\"status\\": %%d, \\"p50\\": %%f, \\"p99\\": %%f}\\n",
    summary.requests, summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout,
    summary.errors.status, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def start_wrk(url: str, connections: int, rate_per_conn: float, seconds: float, workdir: Path) -> subprocess.Popen[str]:
    script = workdir / "bench.lua"
    script.write_text(WRK_LUA % (AUTH_HEADER, int(1000 / rate_per_conn)))
    return subprocess.Popen(
        ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--timeout", "10s", "-s", str(script), url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish_wrk(proc: subprocess.Popen[str], stats: KindStats) -> dict[str, float]:
    out, _ = proc.communicate(timeout=120)
    line = next((ln for ln in out.splitlines() if ln.startswith("BENCHJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary: {out[-500:]}")
    d = json.loads(line.split(" ", 1)[1])
    stats.requests = d["requests"]
    stats.non_2xx = d["status"]
    stats.conn_errors = d["connect"] + d["read"] + d["write"] + d["timeout"]
    return {"p50": d["p50"], "p99": d["p99"]}


class SseStream(threading.Thread):
    def __init__(self, url: str, n: int, ms: int) -> None:
        super().__init__(daemon=True)
        self.url, self.n, self.ms = f"{url}/sse?n={n}&ms={ms}", n, ms
        self.events: list[str] = []
        self.status = 0
        self.error = ""
        self.opened = threading.Event()

    def run(self) -> None:
        try:
            with httpx.Client(trust_env=False, timeout=httpx.Timeout(30, connect=5), headers={"Authorization": AUTH_HEADER}) as c, c.stream(
                "GET", self.url
            ) as r:
                self.status = r.status_code
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        self.events.append(line[6:])
                        self.opened.set()
        except httpx.HTTPError as e:
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.opened.set()

    def result(self) -> StreamResult:
        versions = {e.split()[0] for e in self.events}
        want = [f"{next(iter(versions), '?')} {i}" for i in range(1, self.n + 1)]
        ok = self.status == 200 and not self.error and self.events == want
        return StreamResult(ok, "" if ok else f"status={self.status} events={len(self.events)}/{self.n} {self.error}")


# ----------------------------------------------------------------------------------------------- world


class Scenario:
    """One app behind its own shipped nginx: blue = v1, green = v2."""

    def __init__(self, mode: str, workdir: Path, images: dict[str, str], drain: float) -> None:
        self.mode = mode
        self.app = f"bench{uuid.uuid4().hex[:6]}"
        self.dir = workdir / mode
        self.images = images
        self.nginx: NginxInstance = start_shipped(self.dir, [self.app], {USER: PASSWORD})
        self.ports = {"blue": free_port(), "green": free_port()}
        self.state = self.dir / "state"
        self.spec_path = self.dir / "spec.yaml"
        self.drain = drain

    @property
    def url(self) -> str:
        return self.nginx.public_url_for(self.app)

    def doc(self, color: str) -> dict[str, Any]:
        return {
            "apiVersion": "bluegreen/v1",
            "kind": "BlueGreenApp",
            "metadata": {"name": self.app},
            "spec": {
                "image": self.images["v1" if color == "blue" else "v2"],
                "activeColor": color,
                "ports": self.ports,
                "healthCheck": {"intervalSeconds": 0.2, "timeoutSeconds": 20, "requestTimeoutSeconds": 2},
                "standby": "stop",
                "drainSeconds": self.drain,
                "stopTimeoutSeconds": 2,
                "marker": str(self.state / "active"),
                "labels": {LABEL_BENCH: "bench-cutover"},
                "keepImages": 10_000,  # the shared bgtest:* images are not this app's to prune
                "nginx": {
                    "upstreamFile": str(self.nginx.upstream_file(self.app)),
                    "testCommand": self.nginx.test_command,
                    "reloadCommand": self.nginx.reload_command,
                    "controlUrl": self.nginx.control_url,
                    "switch": "reload" if self.mode in ("reload", "naive") else "flag",
                },
            },
        }

    def reconcile(self, color: str) -> None:
        write_spec(self.spec_path, self.doc(color))
        r = run_reconcile(self.spec_path, self.state, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"reconcile --once to {color} failed: {r.explain()[-1500:]}")

    def naive_cutover(self, client: Any, color: str) -> None:
        """stop old, start new, switch: the sequence the controller replaces."""
        old = "green" if color == "blue" else "blue"
        client.api.stop(f"{self.app}-{old}", timeout=2)
        client.api.start(f"{self.app}-{color}")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.ports[color]}/actuator/health", timeout=1, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        app = BlueGreenApp.model_validate(self.doc(color))
        self.nginx.upstream_file(self.app).write_text(render_include(app, color))  # type: ignore[arg-type]
        subprocess.run(self.nginx.test_command, check=True, capture_output=True, timeout=30)
        subprocess.run(self.nginx.reload_command, check=True, capture_output=True, timeout=30)

    def close(self, client: Any) -> None:
        self.nginx.stop()
        for c in ("blue", "green"):
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_container(f"{self.app}-{c}", force=True)


def run_mode(
    mode: str, cutovers: int, workdir: Path, images: dict[str, str], client: Any, *, gap: float, streams_per_cutover: int, log: Any
) -> ModeResult:
    sc = Scenario(mode, workdir, images, drain=15)
    errors: list[str] = []
    try:
        # Both colors exist once: blue serves, green has been deployed and stopped (standby: stop).
        sc.reconcile("green")
        sc.reconcile("blue")
        stop = threading.Event()
        lock = threading.Lock()
        kinds = {k: KindStats() for k in KINDS}
        clients = [PythonClient(sc.url + "/", "keepalive", 40, stop, kinds["keepalive"], lock) for _ in range(2)]
        clients += [PythonClient(sc.url + "/", "fresh", 40, stop, kinds["fresh"], lock) for _ in range(2)]
        # Long enough for every cutover; the Python clients stop when the cutovers are done.
        budget = 10 + cutovers * (gap + 12)
        wrk = start_wrk(sc.url + "/", 4, 40, budget, sc.dir)
        for c in clients:
            c.start()
        started = time.time()
        time.sleep(gap)
        windows: list[tuple[float, float]] = []
        took: list[float] = []
        streams: list[SseStream] = []
        color = "blue"
        for i in range(cutovers):
            color = "green" if color == "blue" else "blue"
            batch = [SseStream(sc.url, n=30, ms=100) for _ in range(streams_per_cutover)]
            for s in batch:
                s.start()
            for s in batch:
                s.opened.wait(10)
            streams += batch
            a = time.time()
            try:
                if mode == "naive":
                    sc.naive_cutover(client, color)
                else:
                    sc.reconcile(color)
            except Exception as e:  # reported; the run goes on
                errors.append(f"cutover {i + 1}: {str(e)[:300]}")
            b = time.time()
            windows.append((a, b))
            took.append(b - a)
            log(f"  {mode}: cutover {i + 1}/{cutovers} to {color} in {b - a:.1f}s")
            time.sleep(gap)
        for s in streams:
            s.join(40)
        stop.set()
        for c in clients:
            c.join(15)
        wrk.send_signal(signal.SIGINT)  # wrk stops and still prints its summary
        wrk_latency = finish_wrk(wrk, kinds["wrk"])
        return ModeResult(mode, cutovers, time.time() - started, kinds, [s.result() for s in streams], windows, took, wrk_latency, errors)
    finally:
        sc.close(client)


def table(results: list[ModeResult]) -> str:
    rows = ["| mode | client | requests | non-2xx | conn errors | retried | p50/p99 ms steady | p50/p99 ms cutover | streams intact |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        s = r.summary()
        for kind, c in s["clients"].items():
            lat_steady = f"{c['p50_ms_steady']}/{c['p99_ms_steady']}"
            lat_cut = f"{c['p50_ms_cutover']}/{c['p99_ms_cutover']}" if kind != "wrk" else "(whole run)"
            rows.append(
                f"| {r.mode} | {kind} | {c['requests']} | {c['non_2xx']} | {c['conn_errors']} | {c['retried']} | {lat_steady} | {lat_cut} | "
                f"{s['streams_intact']}/{s['streams']} |"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cutovers", type=int, default=20)
    ap.add_argument("--modes", default="flag,reload,naive")
    ap.add_argument("--gap", type=float, default=2.0, help="steady seconds between cutovers")
    ap.add_argument("--streams", type=int, default=2, help="SSE streams opened before each cutover")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2
    client = docker.from_env()
    images = build_standard_images(client)
    workdir = Path(tempfile.mkdtemp(prefix="bench-cutover-"))
    results = []
    for mode in args.modes.split(","):
        print(f"{mode}: {args.cutovers} cutovers under load ...", file=sys.stderr)
        results.append(
            run_mode(mode, args.cutovers, workdir, images, client, gap=args.gap, streams_per_cutover=args.streams, log=lambda m: print(m, file=sys.stderr))
        )
    print(table(results))
    for r in results:
        s = r.summary()
        print(
            f"\n{r.mode}: {s['cutovers']} cutovers, median {s['cutover_seconds_p50']} s each, {s['req_per_s']} req/s "
            f"over {s['seconds']} s; errors: {s['errors'] or 'none'}"
        )
        if s["stream_failures"]:
            print(f"  broken streams: {s['stream_failures']}")
    if args.json:
        args.json.write_text(json.dumps([r.summary() for r in results], indent=2))
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
