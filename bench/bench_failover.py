#!/usr/bin/env python3
"""Failover benchmark (issue 11 item 5): seconds of failed requests after the live container dies, with
`failover: previous` against restart-only (`failover: none`), side by side in one run.

The app needs 10 s to become healthy after every start, like a JVM: the `slow` health mode of the test image
with slow_seconds=10 (tags `bgtest-failover:slow10-a` / `-b`, built here FROM scratch). For each mode: blue
serves version a, then green is deployed with version b (each deploy waits the 10 s); `reconcile --watch` runs;
a bounded request loop (loopback, through the shipped Nginx site with Basic Auth) runs; green's PID 1 exits
(Docker restarts it, and it answers DOWN for 10 s). The load asks `/actuator/health` through the public site:
the test app answers its other paths at once after a start, a JVM answers nothing until it is up, and its
health endpoint is what says so. Reported: failed requests (non-200 or no answer), seconds from the death to
the last failure, and which version serves at the end.

    python bench/bench_failover.py                     # failoverAfterSeconds 3, 50 requests/s, 20 s after the death
    python bench/bench_failover.py --after 2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
import httpx  # noqa: E402

from tests.support.containers import remove_containers  # noqa: E402
from tests.support.controller_run import app_spec, run_reconcile, start_reconcile, with_spec, write_spec  # noqa: E402
from tests.support.images import build_test_image  # noqa: E402
from tests.support.shipped_site import start_shipped  # noqa: E402

USER, PASSWORD = "bench", "bench-failover"
TAG = "bgtest-failover:slow10-{v}"
LABEL = "bluegreen.test"


@dataclass
class Result:
    mode: str
    requests: int = 0
    failed: int = 0
    first_failure: float | None = None  # seconds after the death
    last_failure: float | None = None
    served_at_end: str | None = None
    switched_at: float | None = None  # failover.done logged by the watch process, seconds after the death
    events: list[tuple[float, str]] = field(default_factory=list)  # the watch's log events after the death
    samples: list[tuple[float, int, str | None]] = field(default_factory=list)  # (t since death, status, version)

    def row(self) -> str:
        bad = f"{self.last_failure:.2f}s" if self.last_failure is not None else "0s"
        moved = f"{self.switched_at:.2f}s" if self.switched_at is not None else "-"
        return f"{self.mode:<13} {self.requests:>8} {self.failed:>8} {bad:>16} {moved:>12}   {self.served_at_end}"


def load(url: str, rate: float, stop: threading.Event, out: list[tuple[float, int, str | None]], limit: float) -> None:
    """A bounded request loop: `rate` requests/s until `stop` or `limit` seconds; 0 = no answer."""
    end = time.monotonic() + limit
    with httpx.Client(trust_env=False, auth=(USER, PASSWORD), timeout=2.0) as c:
        while not stop.is_set() and time.monotonic() < end:
            t = time.monotonic()
            try:
                r = c.get(url)
                out.append((t, r.status_code, r.headers.get("x-app-version")))
            except httpx.HTTPError:
                out.append((t, 0, None))
            stop.wait(max(0.0, 1.0 / rate - (time.monotonic() - t)))


def run_mode(mode: str, work: Path, client: Any, after: float, rate: float, observe: float) -> Result:
    app = f"bf{uuid.uuid4().hex[:6]}"
    inst = start_shipped(work / "nginx", [app], {USER: PASSWORD})
    session = f"bench-failover-{app}"
    proc = None
    try:
        doc = app_spec(app, inst, work, TAG.format(v="a"), "blue", session_id=session)
        doc = with_spec(
            doc,
            nginx={"switch": "flag"},
            healthCheck={"timeoutSeconds": 40, "stableSeconds": 1, "intervalSeconds": 0.2},
            failover="previous" if mode == "failover" else "none",
            failoverAfterSeconds=after,
        )
        spec = write_spec(work / "spec.yaml", doc)
        state = work / "state"
        for image, color in ((TAG.format(v="a"), "blue"), (TAG.format(v="b"), "green")):
            write_spec(spec, with_spec(doc, image=image, activeColor=color))
            r = run_reconcile(spec, state, timeout=120)
            if r.returncode != 0:
                raise RuntimeError(f"{mode}: deploy of {color} failed:\n{r.explain()}")
        proc = start_reconcile(spec, state, "--watch", "--log-format", "json", stderr_path=work / "watch.log")
        time.sleep(3)  # its first pass (converged) is done
        samples: list[tuple[float, int, str | None]] = []
        stop = threading.Event()
        t = threading.Thread(target=load, args=(inst.public_url_for(app) + "/actuator/health", rate, stop, samples, observe + 10), daemon=True)
        t.start()
        time.sleep(1)
        green = client.containers.get(f"{app}-green")
        died, died_wall = time.monotonic(), time.time()
        green.exec_run(["kill", "1"])  # the entrypoint exits 0; Docker restarts it (restart policy), DOWN for 10 s
        time.sleep(observe)
        stop.set()
        t.join(10)
        res = Result(mode)
        for at, status, version in samples:
            if at < died:
                continue
            rel = at - died
            res.requests += 1
            res.samples.append((round(rel, 3), status, version))
            if status != 200:
                res.failed += 1
                res.first_failure = rel if res.first_failure is None else res.first_failure
                res.last_failure = rel
        res.served_at_end = next((v for _, s, v in reversed(samples) if s == 200), None)
        for line in (work / "watch.log").read_text().splitlines():
            try:
                e = json.loads(line)
                at = datetime.fromisoformat(str(e["timestamp"]).replace("Z", "+00:00")).timestamp() - died_wall
            except (ValueError, KeyError):
                continue
            if at >= -0.5:
                res.events.append((round(at, 3), str(e.get("event"))))
                if e.get("event") == "failover.done" and res.switched_at is None:
                    res.switched_at = round(at, 3)
        return res
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(20)
        inst.stop()
        remove_containers(client, [{"label": f"{LABEL}={session}"}])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--after", type=float, default=3.0, help="failoverAfterSeconds of the failover mode (default 3)")
    ap.add_argument("--rate", type=float, default=50.0, help="requests per second (default 50)")
    ap.add_argument("--observe", type=float, default=20.0, help="seconds of load after the death (default 20)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    client = docker.from_env()
    for v in ("a", "b"):
        build_test_image(client, TAG.format(v=v), version=f"slow10-{v}", health="slow", slow_seconds=10)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp:
        for mode in ("failover", "restart-only"):
            work = Path(tmp) / mode
            work.mkdir()
            results.append(run_mode(mode, work, client, args.after, args.rate, args.observe))
    load_avg = os.getloadavg()
    print(f"image needs 10 s to become healthy; failoverAfterSeconds {args.after:g}; {args.rate:g} req/s; load average {load_avg[0]:.1f}")
    print(f"{'mode':<13} {'requests':>8} {'failed':>8} {'last failure at':>16} {'switched at':>12}   served at end")
    for r in results:
        print(r.row())
    out = args.json or ROOT / "bench" / "results" / f"failover-{int(time.time())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"after": args.after, "rate": args.rate, "loadavg": load_avg, "results": [r.__dict__ for r in results]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
