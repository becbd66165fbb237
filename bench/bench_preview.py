"""Promoting a preview beside a plain deploy of the same release, side by side, in one run on this machine.

Two apps behind one shipped nginx site (nginx/ templates via tests/support/shipped_site.py, `switch: flag`):
  promote  v1 on blue serves, spec.preview v2 already runs (proven) on green -> spec: image v2, activeColor green,
           no preview. The controller removes the preview flag, switches the flag, confirms, writes the marker.
  deploy   v1 on blue serves, no green container -> spec: image v2, activeColor green. The controller creates
           green, waits for its health check (and `stableSeconds`), switches, confirms, writes the marker.
Each is the real CLI, `python -m controller --once -f SPEC` (a fresh interpreter, as cron runs it), alternating
which side goes first. Measured per run: wall time of the command, the controller's own action time (sum of
`action.done` seconds in its log: the work without interpreter start-up and observation), and the containers
it created (Docker container ids before and after).

    sudo .venv/bin/python bench/bench_preview.py [-n 5] [--stable 2]

Prints a table (medians) and writes bench/results/preview-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from tests.support.containers import remove_containers  # noqa: E402
from tests.support.images import build_test_image  # noqa: E402
from tests.support.net import free_port  # noqa: E402
from tests.support.nginx import NginxInstance  # noqa: E402
from tests.support.shipped_site import start_shipped  # noqa: E402

IMAGES = {"v1": "bluegreen-bench:v1", "v2": "bluegreen-bench:v2"}


class Side:
    def __init__(self, name: str, work: Path, nginx: NginxInstance, stable: float) -> None:
        self.name = name
        self.dir = work / name
        self.dir.mkdir(parents=True)
        self.nginx = nginx
        self.ports = {"blue": free_port(), "green": free_port()}
        self.state = self.dir / "state"
        self.spec = self.dir / "spec.yaml"
        self.stable = stable

    def doc(self, version: str, color: str, preview: str | None = None) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "image": IMAGES[version],
            "activeColor": color,
            "ports": self.ports,
            "healthCheck": {"intervalSeconds": 0.1, "timeoutSeconds": 30, "requestTimeoutSeconds": 1, "stableSeconds": self.stable},
            "drainSeconds": 0,
            "stopTimeoutSeconds": 1,
            "marker": str(self.state / self.name / "active"),
            "nginx": {
                "upstreamFile": str(self.nginx.upstream_file(self.name)),
                "testCommand": self.nginx.test_command,
                "reloadCommand": self.nginx.reload_command,
                "controlUrl": self.nginx.control_url,
                "switch": "flag",
            },
            "labels": {"bench.bluegreen": "preview"},
        }
        if preview is not None:
            spec["preview"] = {"image": IMAGES[preview]}
        return {"apiVersion": "bluegreen/v1", "kind": "BlueGreenApp", "metadata": {"name": self.name}, "spec": spec}

    def once(self, doc: dict[str, Any]) -> tuple[float, float]:
        """Converge `doc`; returns (wall seconds, seconds of the controller's actions)."""
        self.spec.write_text(yaml.safe_dump(doc, sort_keys=False))
        argv = [sys.executable, "-m", "controller", "--once", "-f", str(self.spec), "--state-dir", str(self.state)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        t0 = time.perf_counter()
        p = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=300, check=False, env=env)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            raise RuntimeError(f"controller --once failed ({p.returncode}): {p.stdout}{p.stderr[-3000:]}")
        work = 0.0
        for line in p.stderr.splitlines():
            if line.startswith("{"):
                e = json.loads(line)
                if e.get("event") == "action.done":
                    work += float(e.get("seconds", 0))
        return wall, work

    def ids(self) -> set[str]:
        out = subprocess.run(
            ["docker", "ps", "-aq", "--no-trunc", "--filter", f"label=bluegreen.app={self.name}"],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout  # fmt: skip
        return set(out.split())

    def remove(self, color: str) -> None:
        subprocess.run(["docker", "rm", "-f", f"{self.name}-{color}"], capture_output=True, check=False, timeout=60)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--repetitions", type=int, default=5)
    ap.add_argument("--stable", type=float, default=2.0, help="healthCheck.stableSeconds on both sides (the default is 2)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()

    import docker

    client = docker.from_env(timeout=120)
    for v, tag in IMAGES.items():
        build_test_image(client, tag, version=v)
    work = Path(tempfile.mkdtemp(prefix="bluegreen-bench-preview-"))
    suffix = os.urandom(3).hex()
    names = {"promote": f"bench-pv-{suffix}", "deploy": f"bench-dp-{suffix}"}
    nginx = start_shipped(work / "site", list(names.values()), {"bench": "bench"})
    sides = {op: Side(n, work, nginx, args.stable) for op, n in names.items()}
    runs: dict[str, list[dict[str, float]]] = {op: [] for op in sides}
    try:
        for i in range(args.repetitions):
            # Untimed set-up: v1 on blue serves; the promote side also has preview v2 proven on green,
            # the deploy side no green container.
            pv, dp = sides["promote"], sides["deploy"]
            pv.once(pv.doc("v1", "blue"))
            pv.once(pv.doc("v1", "blue", preview="v2"))
            dp.remove("green")
            dp.once(dp.doc("v1", "blue"))
            order = ["promote", "deploy"] if i % 2 == 0 else ["deploy", "promote"]
            for op in order:
                side = sides[op]
                before = side.ids()
                wall, act = side.once(side.doc("v2", "green"))
                created = len(side.ids() - before)
                runs[op].append({"wall_s": wall, "actions_s": act, "created": created})
            print(
                f"repetition {i + 1}/{args.repetitions}: "
                + "  ".join(f"{op} {runs[op][-1]['wall_s']:.2f}s wall, {runs[op][-1]['actions_s']:.3f}s actions, "
                            f"{int(runs[op][-1]['created'])} created" for op in sides),
                flush=True,
            )  # fmt: skip
    finally:
        remove_containers(client, [{"label": f"bluegreen.app={n}"} for n in names.values()])
        nginx.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{'operation':<9} {'wall (median)':>14} {'actions (median)':>17} {'containers created':>19}")
    rows = []
    for op, rs in runs.items():
        wall = statistics.median(r["wall_s"] for r in rs)
        act = statistics.median(r["actions_s"] for r in rs)
        created = sorted({int(r["created"]) for r in rs})
        rows.append({"operation": op, "wall_median_s": wall, "actions_median_s": act, "created": created, "runs": rs})
        print(f"{op:<9} {wall:>13.3f}s {act:>16.3f}s {','.join(map(str, created)):>19}")
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "python": platform.python_version(),
        "repetitions": args.repetitions,
        "stable_seconds": args.stable,
        "switch": "flag",
        "results": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"preview-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
