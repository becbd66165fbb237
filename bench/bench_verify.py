#!/usr/bin/env python3
"""Post-switch verification benchmark: a bad release under load, with verification and without, in one run.

The bad release (`bgtest-verify:flaky`) passes its health check but answers 500 to every second request. For each
mode, under the same bounded loopback load through the shipped Nginx site (Basic Auth, flag switch):

1. deploy bgtest:v1 on blue (no verification), wait until it serves;
2. flip the spec to the flaky image on green and run the real controller (`python -m controller --once`);
3. keep the load on for `--observe` seconds from the flip, then stop.

- with     spec.verify (the issue's defaults: maxErrorRate 0.05, minRequests 20, healthFailures 3; window --window s)
- without  no spec.verify: the switch is the end of the deploy, as before issue 11

Reported per mode: requests, failed requests (non-200 or no answer), seconds of bad service (from the first 5xx
to the last one; without verification it lasts until someone acts, here until the end of the observation), and
the time from the first 5xx to traffic back on the previous color (first v1 answer after it).

    python bench/bench_verify.py                      # --observe 20 --rate 50 --window 30
    python bench/bench_verify.py --observe 10 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402

from tests.support.containers import remove_containers  # noqa: E402
from tests.support.controller_run import Traffic, World  # noqa: E402
from tests.support.images import build_standard_images  # noqa: E402
from tests.support.shipped_site import start_shipped  # noqa: E402
from tests.support.verify_images import verify_image  # noqa: E402
from tests.support.wait import wait_until  # noqa: E402

USER, PASSWORD = "bench", "bench-password"


@dataclass
class ModeResult:
    mode: str
    requests: int
    failed: int
    bad_seconds: float  # first 5xx -> last 5xx
    back_after: float | None  # first 5xx -> first answer of the previous color after it (None: never)
    controller_seconds: float  # the --once run
    exit_code: int


def run_mode(mode: str, args: argparse.Namespace, tmp: Path, client: Any, images: dict[str, str], session: str) -> ModeResult:
    app = f"bv{mode[:3]}{uuid.uuid4().hex[:6]}"
    site = start_shipped(tmp / f"site-{mode}", [app], {USER: PASSWORD})
    try:
        w = World(client, app, site, tmp / mode, session, healthCheck={"stableSeconds": 2, "intervalSeconds": 0.5})
        w.set(image=images["v1"], nginx={"switch": "flag"})
        w.once()
        url = site.public_url_for(app).replace("http://", f"http://{USER}:{PASSWORD}@") + "/"
        verify = {
            "windowSeconds": args.window,
            "maxErrorRate": 0.05,
            "minRequests": 20,
            "healthFailures": 3,
            "accessLog": str(site.dir / "logs" / f"{app}.access.jsonl"),
        }
        flip: dict[str, Any] = {"image": images["flaky"], "activeColor": "green"}
        if mode == "with":
            flip["verify"] = verify
        with Traffic(url, interval=1.0 / args.rate, max_requests=int(args.rate * (args.observe + 60)), max_seconds=args.observe + 60) as t:
            wait_until(lambda: len(t.answers) >= 10, timeout=10, message="load running")
            w.set(**flip)
            started = time.time()
            r = w.run("--once", timeout=args.window + 60)
            wait_until(lambda: time.time() - started >= args.observe, timeout=args.observe + 5, interval=0.1)
        answers = [a for a in t.answers if a.at >= started]
        bad = [a for a in answers if a.status is not None and a.status >= 500]
        failed = [a for a in answers if a.status != 200]
        first = bad[0].at if bad else None
        back = next((a.at for a in answers if first is not None and a.at > first and a.version == "v1"), None)
        return ModeResult(
            mode=mode,
            requests=len(answers),
            failed=len(failed),
            bad_seconds=round(bad[-1].at - bad[0].at, 2) if bad else 0.0,
            back_after=round(back - first, 2) if back is not None and first is not None else None,
            controller_seconds=round(r.elapsed, 2),
            exit_code=r.returncode,
        )
    finally:
        site.stop()
        remove_containers(client, [{"label": f"bluegreen.app={app}"}])


def table(results: list[ModeResult], args: argparse.Namespace) -> str:
    rows = [
        f"observation {args.observe:g} s from the flip, {args.rate:g} req/s, window {args.window:g} s",
        "| mode | requests | failed | seconds of bad service | first 5xx → previous color serves | controller run (s), exit |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        back = f"{r.back_after:.2f} s" if r.back_after is not None else f"never (> {args.observe:g} s)"
        rows.append(f"| {r.mode} | {r.requests} | {r.failed} | {r.bad_seconds:.2f} | {back} | {r.controller_seconds:.1f}, {r.exit_code} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--observe", type=float, default=20.0, help="seconds of load after the flip (default 20)")
    p.add_argument("--rate", type=float, default=50.0, help="requests per second, one client (default 50)")
    p.add_argument("--window", type=float, default=30.0, help="verify.windowSeconds (default 30)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if not (1 <= args.observe <= 300 and 1 <= args.rate <= 200 and 1 <= args.window <= 600):
        p.error("--observe 1-300, --rate 1-200, --window 1-600")
    client = docker.from_env()
    images = build_standard_images(client)
    images["flaky"] = verify_image(client, "flaky")
    session = f"bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as d:
        results = [run_mode(m, args, Path(d), client, images, session) for m in ("with", "without")]
    print(table(results, args))
    out = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "results": [asdict(r) for r in results]}
    results_dir = ROOT / "bench" / "results"
    results_dir.mkdir(exist_ok=True)
    (results_dir / f"verify-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
