#!/usr/bin/env python3
"""Notifications benchmark (issue 21): cutover time without `--notify-url`, with a receiver that answers, one that
hangs (never answers) and one that answers 500, side by side in one run.

One app (real dockerd, real nginx on loopback, switch: flag, standby: keep) is deployed on both colors, then each
mode does N cutovers, alternating bgtest:v1 (blue) and bgtest:v2 (green), the modes taking turns: with standby
keep every cutover is a switch. Each cutover is one `reconcile --once` (JSON logs). Reported per mode, medians over the cutovers:

- switch   the SwitchRoute step (write, confirm through Nginx), as the controller logs it
- to live  from the start of the process to the SwitchRoute step done (what a user waits for)
- pass     from the start of the process to `reconcile.done` (the pass, ledger and notifications queued)
- exit     the whole process: after the lock is released, up to 10 s delivering what is still queued

    python bench/bench_notify.py                   # 5 cutovers per mode
    python bench/bench_notify.py --cutovers 9 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402

from tests.support.containers import remove_containers  # noqa: E402
from tests.support.controller_run import app_spec, run_reconcile, with_spec, write_spec  # noqa: E402
from tests.support.images import build_standard_images  # noqa: E402
from tests.support.nginx import NginxInstance  # noqa: E402
from tests.support.webhook import Receiver  # noqa: E402

MODES = ("none", "ok", "hang", "fail")


def _at(line: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(line["timestamp"]).replace("Z", "+00:00")).timestamp()


def cutover(spec: Path, state: Path, doc: dict[str, Any], image: str, color: str, urls: list[str]) -> dict[str, float]:
    write_spec(spec, with_spec(doc, image=image, activeColor=color))
    notify = [a for u in urls for a in ("--notify-url", u)]
    started = time.time()
    r = run_reconcile(spec, state, "--once", "--log-format", "json", *notify, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(r.explain())
    logs = r.logs()
    if not any(x.get("action") == "SwitchRoute" for x in logs):
        raise RuntimeError(f"no switch to {color}:\n{r.explain()}")
    [switch] = [x for x in logs if x.get("event") == "action.done" and x.get("action") == "SwitchRoute"]
    [done] = [x for x in logs if x.get("event") == "reconcile.done"]
    return {
        "switch": float(switch["seconds"]),
        "to_live": _at(switch) - started,
        "pass": _at(done) - started,
        "exit": r.elapsed,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--cutovers", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    client = docker.from_env()
    tags = build_standard_images(client)
    app = f"bn{uuid.uuid4().hex[:6]}"
    session = f"bench-notify-{app}"
    receivers = {m: Receiver(m) for m in ("ok", "hang", "fail")}
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-notify-") as tmp:
        work = Path(tmp)
        inst = NginxInstance.start(work / "nginx", [app])
        try:
            doc = with_spec(app_spec(app, inst, work, tags["v1"], "blue", session_id=session), healthCheck={"stableSeconds": 0.5})
            spec, state = work / "spec.yaml", work / "state"
            for image, color in ((tags["v1"], "blue"), (tags["v2"], "green")):  # both colors run: every cutover a switch
                cutover(spec, state, doc, image, color, [])
            flip = [(tags["v1"], "blue"), (tags["v2"], "green")]  # green serves now: blue next, then green, ...
            n = 0
            results = {mode: [] for mode in MODES}
            for _ in range(args.cutovers):  # the modes take turns: a change in the machine's load hits them alike
                for mode in MODES:
                    urls = [] if mode == "none" else [receivers[mode].url]
                    results[mode].append(cutover(spec, state, doc, *flip[n % 2], urls))
                    n += 1
        finally:
            inst.stop()
            remove_containers(client, [{"label": f"bluegreen.app={app}"}])
            for r in receivers.values():
                r.close()
    print(f"{args.cutovers} cutovers per mode (switches: standby keep), medians in seconds (to live: also the fastest)")
    print(f"{'mode':<6} {'switch':>8} {'to live':>8} {'(min)':>8} {'pass':>8} {'exit':>8}   received")
    for mode, rows in results.items():
        med = {k: statistics.median(r[k] for r in rows) for k in ("switch", "to_live", "pass", "exit")}
        fastest = min(r["to_live"] for r in rows)
        got = len(receivers[mode].bodies) if mode in receivers else 0
        print(f"{mode:<6} {med['switch']:>8.3f} {med['to_live']:>8.3f} {fastest:>8.3f} {med['pass']:>8.3f} {med['exit']:>8.3f}   {got}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
