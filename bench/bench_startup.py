"""Start-up budget: a no-op `reconcile --once` beside a bare Python observer of the same facts, in one run.

Issue 9's goal: the no-op `--once` (what cron starts every minute, and what every `--plan`/`--status` pays)
takes at most 1.5x the bare observer. Both sides run as fresh interpreters, N repetitions interleaved
(alternating which goes first), medians compared:

  controller  `python -m controller --once -f SPEC` on a converged app (real dockerd, a real nginx on
              loopback; the spec of bench_core.py: its nginx.switch is reload): lock, one container list,
              both colors' health, the route through Nginx's control server, include/marker, status and history.
  bare        `python -c ...`: the interpreter, the Docker SDK, one container list, one HTTP probe of the
              live color's health endpoint (with `requests`, which the Docker SDK loads anyway), the marker.

Also timed: `python -c pass` (the interpreter alone) and `python -m controller --version` (interpreter and
what the CLI imports before parsing arguments, no work); and the no-op `--once` again under `python -X importtime`
(what it really imports, lazy imports included), broken down by
top-level package (median of the runs; a package's figure includes what it imports first, so a package
loaded by another, e.g. requests by docker, is counted in both).

    sudo .venv/bin/python bench/bench_startup.py [-n 10] [--top 15] [--hide rich]

--hide (default: rich) makes `import rich` fail in every timed interpreter, as on a host where the controller was
installed with `pip install .`: rich comes into .venv only with import-linter (the [test] extra), and structlog
and httpx import it whenever it is there (only on the controller's side). `--hide ""`
measures .venv as it is.

Prints the table and the ratio, writes bench/results/startup-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_core import IMAGES, ControllerSide  # noqa: E402
from tests.support.containers import remove_containers  # noqa: E402
from tests.support.images import build_test_image  # noqa: E402

GOAL = 1.5  # issue 9: no-op --once <= 1.5x the bare observer

BARE = """
import sys
import docker
import requests

name, port, marker = sys.argv[1], sys.argv[2], sys.argv[3]
client = docker.from_env()
containers = client.containers.list(all=True, filters={"label": f"bluegreen.app={name}"})
r = requests.get(f"http://127.0.0.1:{port}/actuator/health", timeout=2)
with open(marker) as f:
    live = f.read().strip()
print(len(containers), r.status_code, live)
sys.exit(0 if containers and r.status_code == 200 and live else 1)
"""

IMPORTTIME = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)\s*$")


def run(argv: list[str]) -> str:
    p = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} ... failed ({p.returncode}): {(p.stderr or p.stdout).strip()[-500:]}")
    return p.stdout


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def import_costs(argv: list[str], runs: int) -> tuple[dict[str, float], float]:
    """Per top-level package and per controller.* module: median over `runs` of the largest cumulative import
    time (ms); and the total of all self times (ms)."""
    per: dict[str, list[float]] = {}
    totals: list[float] = []
    for _ in range(runs):
        p = subprocess.run(
            [sys.executable, "-X", "importtime", *argv[1:]],
            capture_output=True, text=True, cwd=ROOT, timeout=120, check=True,
        )
        best: dict[str, float] = {}
        total = 0.0
        for line in p.stderr.splitlines():
            m = IMPORTTIME.match(line)
            if not m:
                continue
            self_us, cum_us, name = int(m.group(1)), int(m.group(2)), m.group(4)
            total += self_us / 1000
            # Per top-level package, and per controller module (which of ours pulls in what).
            for key in {name.split(".")[0], name if name.startswith("controller.") else ""} - {""}:
                best[key] = max(best.get(key, 0.0), cum_us / 1000)
        totals.append(total)
        for k, v in best.items():
            per.setdefault(k, []).append(v)
    return {k: statistics.median(v) for k, v in per.items()}, statistics.median(totals)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--repetitions", type=int, default=10)
    ap.add_argument("--top", type=int, default=15, help="packages shown in the import breakdown")
    ap.add_argument("--hide", default="rich", help="comma-separated modules whose import fails in the timed runs")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    hidden = [m for m in args.hide.split(",") if m]

    import docker

    client = docker.from_env(timeout=120)
    build_test_image(client, IMAGES["v1"], version="v1")
    work = Path(tempfile.mkdtemp(prefix="bluegreen-bench-startup-"))
    ctl = ControllerSide(f"bench-start-{os.urandom(3).hex()}", work, 0.1)
    bare = work / "bare.py"
    bare.write_text(BARE)
    if hidden:  # a module of that name earlier on sys.path than site-packages, whose import fails
        (work / "hide").mkdir()
        for m in hidden:
            (work / "hide" / f"{m}.py").write_text(f"raise ImportError('{m} hidden by bench_startup.py --hide')\n")
        os.environ["PYTHONPATH"] = os.pathsep.join([str(work / "hide"), *filter(None, [os.environ.get("PYTHONPATH")])])
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {"controller": [], "bare": [], "python": [], "version": []}
    try:
        ctl.reset()  # untimed: v1 on blue serves; the next --once has nothing to do
        ctl.noop()  # warm: the first run after a change writes status; page cache for both sides
        bare_argv = [sys.executable, str(bare), ctl.name, str(ctl.ports["blue"]), str(ctl.marker)]
        run(bare_argv)
        sides: list[tuple[str, Callable[[], Any]]] = [
            ("controller", ctl.noop),
            ("bare", lambda: run(bare_argv)),
            ("python", lambda: run([sys.executable, "-c", "pass"])),
            ("version", lambda: run([sys.executable, "-m", "controller", "--version"])),
        ]
        for i in range(args.repetitions):
            for label, fn in sides if i % 2 == 0 else sides[::-1]:
                times[label].append(timed(fn))
            print(
                f"repetition {i + 1}/{args.repetitions}: "
                + "  ".join(f"{k} {v[-1] * 1000:.0f}ms" for k, v in times.items()),
                flush=True,
            )
        # The argv of ControllerSide.once (bench_core.py), under -X importtime.
        once = [sys.executable, "-m", "controller", "--once", "-f", str(ctl.spec), "--state-dir", str(ctl.state), "--log-level", "warning"]
        imports, import_total = import_costs(once, max(3, args.repetitions // 2))
    finally:
        remove_containers(client, [{"label": f"bluegreen.app={ctl.name}"}])
        ctl.nginx.stop()
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()

    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["controller"] / med["bare"]
    print(f"\n{'run (median of ' + str(args.repetitions) + ')':<44} {'seconds':>8}")
    print(f"{'no-op reconcile --once':<44} {med['controller']:>8.3f}")
    print(f"{'bare observer (docker SDK, 1 list, 1 probe)':<44} {med['bare']:>8.3f}")
    print(f"{'python -m controller --version':<44} {med['version']:>8.3f}")
    print(f"{'python -c pass':<44} {med['python']:>8.3f}")
    verdict = "within" if ratio <= GOAL else "over"
    print(f"\nratio no-op --once / bare observer: {ratio:.2f}x ({verdict} the {GOAL}x budget of issue 9)")
    print(f"hidden modules (import fails, as without the [test] extra): {', '.join(hidden) or 'none'}")
    print(f"load average before/after: {' '.join(f'{x:.1f}' for x in load_before)} / {' '.join(f'{x:.1f}' for x in load_after)}")

    ranked = sorted(imports.items(), key=lambda kv: kv[1], reverse=True)
    print(f"\nimports of the no-op `python -m controller --once` (-X importtime, median): {import_total:.0f} ms in all")
    for title, rows in (
        ("package", [kv for kv in ranked if "." not in kv[0]][: args.top]),
        ("controller module", [kv for kv in ranked if kv[0].startswith("controller.")][: args.top]),
    ):
        print(f"{title:<32} {'cumulative ms':>13}")
        for name, ms in rows:
            print(f"{name:<32} {ms:>13.1f}")

    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "python": platform.python_version(),
        "repetitions": args.repetitions,
        "hidden_modules": hidden,
        "medians_s": med,
        "ratio": ratio,
        "goal": GOAL,
        "samples_s": times,
        "import_total_ms": import_total,
        "imports_cumulative_ms": dict(sorted(imports.items(), key=lambda kv: kv[1], reverse=True)),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"startup-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
