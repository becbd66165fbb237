"""Benchmarks of `reconcile --watch` on real Docker and a real nginx (private, loopback), printed as a table.

    python bench/bench_watch.py [--trials 5] [--apps 1,10,50] [--reconciles 200]

1. `docker kill` of the live container -> nginx serving again: the watch (Docker event) beside the
   cron route's floor (`reconcile --once` started right after the kill).
2. spec save (write-temp-then-rename) -> the cutover's first action starting: the watch (file event)
   beside `reconcile --once` started right after the save.
3. RSS of the watch process after N reconciles, beside its RSS after its first pass.
4. One no-op resync pass of the watch for 1, 10 and 50 apps in one specs directory: wall time and
   Docker API calls (counted on the docker SDK's HTTP session), beside the 1-app figures.
Containers carry bluegreen.test=bench-<id> and are removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
import httpx  # noqa: E402
import yaml  # noqa: E402

from controller.app.reconcile import Reconciler  # noqa: E402
from controller.drivers.host import HostWorld  # noqa: E402
from controller.kernel.logs import configure  # noqa: E402
from controller.runtime.watch import AppKind, Manager  # noqa: E402
from controller.store.metrics import Metrics  # noqa: E402
from controller.store.state import StateStore  # noqa: E402
from tests.support.controller_run import app_spec, run_reconcile, start_reconcile, with_spec  # noqa: E402
from tests.support.images import build_standard_images  # noqa: E402
from tests.support.net import free_port  # noqa: E402
from tests.support.nginx import NginxInstance  # noqa: E402

RUN = f"bench-{uuid.uuid4().hex[:8]}"


def save(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    os.replace(tmp, path)


def version(url: str, client: httpx.Client) -> str | None:
    try:
        r = client.get(url, timeout=1)
    except httpx.HTTPError:
        return None
    return r.headers.get("x-app-version") if r.status_code == 200 else None


def wait(pred: Any, timeout: float, what: str, interval: float = 0.005) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if pred():
            return time.monotonic()
        time.sleep(interval)
    raise TimeoutError(what)


def log_events(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


def event_time(e: dict[str, Any]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()


class One:
    """One app behind its own nginx, in a fresh directory."""

    def __init__(self, base: Path, name: str) -> None:
        self.dir = base / name
        self.app = f"{name}{uuid.uuid4().hex[:6]}"
        self.nginx = NginxInstance.start(self.dir / "nginx", [self.app])
        self.specs = self.dir / "specs"
        self.specs.mkdir(parents=True)
        self.state = self.dir / "state"
        self.doc = app_spec(self.app, self.nginx, self.dir, "bgtest:v1", "blue", session_id=RUN)
        self.spec = self.specs / f"{self.app}.yaml"
        save(self.spec, self.doc)
        self.url = self.nginx.public_url_for(self.app) + "/"
        self.http = httpx.Client(trust_env=False)

    def served(self) -> str | None:
        return version(self.url, self.http)

    def close(self) -> None:
        self.http.close()
        self.nginx.stop()


def kill_to_serving(base: Path, trials: int, dc: Any) -> tuple[list[float], list[float]]:
    one = One(base, "kill")
    log = one.dir / "watch.log"
    p = start_reconcile(one.specs, one.state, "--watch", "--resync", "3600", "--log-format", "json", stderr_path=log)
    watch_times, once_times = [], []
    try:
        wait(lambda: one.served() == "v1", 30, "first deploy")
        time.sleep(1)
        for _ in range(trials):
            c = dc.containers.get(f"{one.app}-blue")
            seen = len(log_events(log))
            t0 = time.monotonic()
            c.kill()
            wait(lambda: one.served() != "v1", 5, "down")
            watch_times.append(wait(lambda: one.served() == "v1", 30, "serving again") - t0)
            # The repairing pass must end before the next kill (or the kill lands inside its health wait).
            wait(lambda seen=seen: any(e.get("event") == "reconcile.done" and e.get("result") == "converged" for e in log_events(log)[seen:]), 30, "pass done", 0.05)
            time.sleep(1.0)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(30)
    try:
        for _ in range(trials):
            c = dc.containers.get(f"{one.app}-blue")
            t0 = time.monotonic()
            c.kill()
            wait(lambda: one.served() != "v1", 5, "down")
            r = run_reconcile(one.specs, one.state, "--once")
            assert r.returncode == 0, r.stderr[-2000:]
            once_times.append(wait(lambda: one.served() == "v1", 30, "serving again") - t0)
    finally:
        one.close()
    return watch_times, once_times


def save_to_cutover(base: Path, trials: int) -> tuple[list[float], list[float]]:
    one = One(base, "save")
    log = one.dir / "watch.log"
    p = start_reconcile(one.specs, one.state, "--watch", "--resync", "3600", "--log-format", "json", stderr_path=log)
    watch_times, once_times = [], []
    colors = ["green", "blue"]
    images = ["bgtest:v2", "bgtest:v1"]
    try:
        wait(lambda: one.served() == "v1", 30, "first deploy")
        for i in range(trials):
            want = images[i % 2]
            doc = with_spec(one.doc, image=want, activeColor=colors[i % 2])
            seen = len(log_events(log))
            t0 = time.time()
            save(one.spec, doc)
            wait(lambda seen=seen: any(e.get("event") == "action.start" for e in log_events(log)[seen:]), 30, "cutover start", 0.01)
            first = next(e for e in log_events(log)[seen:] if e.get("event") == "action.start")
            watch_times.append(event_time(first) - t0)
            wait(lambda want=want: one.served() == want[-2:], 30, "cutover done")
            time.sleep(0.5)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(30)
    try:
        for i in range(trials):
            want = images[(trials + i) % 2]
            save(one.spec, with_spec(one.doc, image=want, activeColor=colors[(trials + i) % 2]))
            t0 = time.time()
            r = run_reconcile(one.specs, one.state, "--once", "--log-format", "json")
            assert r.returncode == 0, r.stderr[-2000:]
            first = next(e for e in r.logs() if e.get("event") == "action.start")
            once_times.append(event_time(first) - t0)
    finally:
        one.close()
    return watch_times, once_times


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def passes(port: int) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", trust_env=False).text
    return sum(
        s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == "bluegreen_reconcile_runs_total"
    )


def rss_after(base: Path, reconciles: int) -> tuple[int, int, float]:
    one = One(base, "rss")
    port = free_port()
    p = start_reconcile(
        one.specs, one.state, "--watch", "--resync", "0.05", "--metrics-port", str(port), "--log-level", "warning",
        stderr_path=one.dir / "watch.log",
    )
    try:
        wait(lambda: one.served() == "v1", 30, "first deploy")
        wait(lambda: passes(port) >= 1, 10, "first pass", 0.05)
        first = rss_kib(p.pid)
        t0 = time.monotonic()
        wait(lambda: passes(port) >= reconciles, 300, f"{reconciles} reconciles", 0.2)
        took = time.monotonic() - t0
        after = rss_kib(p.pid)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(30)
        one.close()
    return first, after, took


def noop_pass(base: Path, n: int, trials: int) -> tuple[float, float, Counter[str]]:
    """Median wall time and Docker API calls of one no-op resync pass for n apps, in-process."""
    d = base / f"noop{n}"
    apps = [f"n{n}x{i}{uuid.uuid4().hex[:4]}" for i in range(n)]
    nginx = NginxInstance.start(d / "nginx", apps)
    specs = d / "specs"
    specs.mkdir(parents=True)
    for a in apps:
        save(specs / f"{a}.yaml", app_spec(a, nginx, d, "bgtest:v1", "blue", session_id=RUN))
    world = HostWorld()
    metrics = Metrics()
    store = StateStore(d / "state")
    calls: list[str] = []
    lock = threading.Lock()

    def hook(r: Any, *args: Any, **kwargs: Any) -> None:
        with lock:
            path = r.request.path_url.split("?")[0].split("/", 2)[-1]  # e.g. containers/json, images/<id>/json
            calls.append(r.request.method + " " + re.sub(r"^(containers|images)/[^/]+/", r"\1/<id>/", path))

    world.docker.client().api.hooks["response"].append(hook)
    watcher = Manager(specs, [AppKind(Reconciler(world, store, metrics))], metrics, d / "state", resync=3600)
    try:
        watcher.start()

        def idle() -> bool:
            return all(w.passes >= 1 and not w.pending and w._running is None for w in watcher.workers.values())

        wait(idle, 300, "first deploy of every app", 0.05)
        for w in watcher.workers.values():  # the first pass deployed; one more to be sure all are converged
            assert w.last_result is not None and w.last_result.converged, w.last_result
        times, counts = [], []
        per_path: Counter[str] = Counter()
        for _ in range(trials):
            before = {name: w.passes for name, w in watcher.workers.items()}
            with lock:
                calls.clear()
            t0 = time.monotonic()
            watcher.trigger_all("resync", 0.0, urgent=False)
            wait(lambda before=before: all(w.passes > before[k] and w._running is None for k, w in watcher.workers.items()), 120, "pass", 0.001)
            times.append(time.monotonic() - t0)
            with lock:
                counts.append(len(calls))
                per_path = Counter(calls)
            assert all(w.last_result is not None and w.last_result.converged and not w.last_result.actions_done for w in watcher.workers.values())
        return statistics.median(times), statistics.median(counts), per_path
    finally:
        watcher.request_stop()
        watcher.wait_stopped(30)
        world.close()
        nginx.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--apps", default="1,10,50")
    ap.add_argument("--reconciles", type=int, default=200)
    args = ap.parse_args()
    configure("json", stream=open(os.devnull, "w"), level="error")  # noqa: SIM115 (the in-process watch's logs)
    dc = docker.from_env(timeout=120)
    build_standard_images(dc)
    rows: list[tuple[str, str, str, str]] = []
    base = Path(tempfile.mkdtemp(prefix="bench-watch-"))
    try:
        w, o = kill_to_serving(base, args.trials, dc)
        mw, mo = statistics.median(w), statistics.median(o)
        rows.append(("docker kill -> serving again (median)", f"watch {mw:.2f} s", f"--once right after {mo:.2f} s", f"{mw / mo:.2f}x"))
        w, o = save_to_cutover(base, args.trials)
        mw, mo = statistics.median(w), statistics.median(o)
        rows.append(("spec save -> cutover starts (median)", f"watch {mw:.2f} s", f"--once right after {mo:.2f} s", f"{mw / mo:.2f}x"))
        first, after, took = rss_after(base, args.reconciles)
        rows.append((f"RSS after {args.reconciles} reconciles ({took:.0f} s)", f"{after / 1024:.1f} MiB", f"after 1st pass {first / 1024:.1f} MiB", f"{after / first:.2f}x"))
        ns = [int(x) for x in args.apps.split(",")]
        base_t = base_c = None
        for n in ns:
            t, c, paths = noop_pass(base, n, args.trials)
            if base_t is None:
                base_t, base_c = t, c
            detail = ", ".join(f"{k} x{v}" for k, v in sorted(paths.items()))
            rows.append(
                (
                    f"no-op resync pass, {n} apps",
                    f"{t * 1000:.0f} ms, {c:g} Docker calls ({detail})",
                    f"1 app: {base_t * 1000:.0f} ms, {base_c:g} calls",
                    f"{t / base_t:.1f}x time, {c / base_c:.1f}x calls",  # type: ignore[operator]
                )
            )
    finally:
        subprocess.run(["docker", "rm", "-f", *subprocess.run(["docker", "ps", "-aq", "--filter", f"label=bluegreen.test={RUN}"], capture_output=True, text=True).stdout.split()], capture_output=True)
    width = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(r[i].ljust(width[i]) for i in range(4)))
    return 0


if __name__ == "__main__":
    random.seed(0)
    sys.exit(main())
