"""Start-up budget: what cron pays for a no-op pass, beside a minimal observer of the same facts, in one run.

Issue 18 item 8's goal: a no-op `reconcile --once` at the cron default log level (`info`), and `--plan` and
`--status` likewise, each take at most 1.5x a minimal observer. Every side runs as a fresh interpreter; each
repetition runs every side once, in an order that alternates (paired runs), and the ratios are taken per
repetition, then their median is reported with n:

  once      `python -m controller --once -f SPEC --state-dir D --log-level info --log-format json` on a converged
            app (real dockerd, a real nginx on loopback; the spec of bench_core.py, `nginx.switch: reload`):
            lock, one container list, both colors' health, the route through Nginx's control server,
            include/marker, status; what cron runs every minute, without --metrics-textfile
  plan      `--plan` on the same app (no lock, no writes)
  status    `--status` on the same app
  once+prom `--once ... --metrics-textfile F`: the packaged cron line, which exports metrics (informational)
  observer  `python observer.py`: the interpreter, the Docker SDK, one container list, one HTTP probe of the
            live color's health endpoint (with `requests`, which the Docker SDK loads anyway), the marker read
  python    `python -c pass`: the interpreter alone

Per run: wall seconds, CPU seconds (user + system, from the child's rusage: what a cron run costs the host),
and peak RSS (GNU time's %M; n/a without /usr/bin/time). `--baseline REF` also runs the controller sides of another commit (`git archive REF`, e.g.
`main`) in the same repetitions, with a state dir of their own, so a change is measured against its base
on the same machine at the same time. Both trees are byte-compiled first (as `pip install` does; the runs
write no bytecode). Then the branch's no-op `--once` again under `python -X importtime` (what it really imports,
lazy imports included), by top-level package and by `controller.*` module.

    sudo .venv/bin/python bench/bench_startup.py [-n 21] [--baseline main] [--top 15] [--hide rich,click,pygments]

--hide (default: rich,click,pygments) makes those imports fail in every timed interpreter, as on a host where the
controller was installed with `pip install .`: they come into .venv only with the [test] extra, and httpx and
structlog import them whenever they are there (only on the controller's sides). `--hide ""` measures .venv as
it is.

Prints the table and the ratios, writes bench/results/startup-<time>.json.
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_core import IMAGES, ControllerSide  # noqa: E402
from tests.support.containers import remove_containers  # noqa: E402
from tests.support.images import build_test_image  # noqa: E402

GOAL = 1.5  # issue 18 item 8: each of --once/--plan/--status <= 1.5x the minimal observer
MODES = ("once", "plan", "status")

OBSERVER = """
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


# Peak RSS: GNU time's %M. A child forked from this (large) process inherits its high-water mark in its own
# ru_maxrss, so the rusage of a direct child cannot say it; `time` is small, and so is what it forks.
GNU_TIME = "/usr/bin/time" if subprocess.run(["/usr/bin/time", "-f", "%M", "true"], capture_output=True, check=False).returncode == 0 else None


class Sample:
    def __init__(self, wall: float, cpu: float, rss_kib: int | None) -> None:
        self.wall, self.cpu, self.rss_kib = wall, cpu, rss_kib


def measure(argv: list[str], cwd: Path, env: dict[str, str], out: Path) -> Sample:
    """One run to completion: wall seconds, CPU seconds (wait4's rusage: the child and what it waited for) and peak
    RSS (GNU time, when installed)."""
    rss_file = out.with_suffix(".rss")
    wrapped = [GNU_TIME, "-f", "%M", "-o", str(rss_file), *argv] if GNU_TIME else argv
    with open(out, "wb") as f:
        t0 = time.perf_counter()
        p = subprocess.Popen(wrapped, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])} ... failed ({p.returncode}): {out.read_text()[-800:]}")
    rss = int(rss_file.read_text().split()[-1]) if GNU_TIME else None
    return Sample(wall, ru.ru_utime + ru.ru_stime, rss)


def import_costs(argv: list[str], cwd: Path, env: dict[str, str], runs: int) -> tuple[dict[str, float], float]:
    """Per top-level package and per controller.* module: median over `runs` of the largest cumulative import
    time (ms); and the total of all self times (ms)."""
    per: dict[str, list[float]] = {}
    totals: list[float] = []
    for _ in range(runs):
        p = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], capture_output=True, text=True, cwd=cwd, env=env, timeout=120, check=True)
        best: dict[str, float] = {}
        total = 0.0
        for line in p.stderr.splitlines():
            m = IMPORTTIME.match(line)
            if not m:
                continue
            self_us, cum_us, name = int(m.group(1)), int(m.group(2)), m.group(4)
            total += self_us / 1000
            for key in {name.split(".")[0], name if name.startswith("controller.") else ""} - {""}:
                best[key] = max(best.get(key, 0.0), cum_us / 1000)
        totals.append(total)
        for k, v in best.items():
            per.setdefault(k, []).append(v)
    return {k: statistics.median(v) for k, v in per.items()}, statistics.median(totals)


def export_tree(ref: str, dest: Path) -> Path:
    """`git archive ref` of this repository unpacked in `dest` (the controller package and what it reads)."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "controller"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--repetitions", type=int, default=21)
    ap.add_argument("--baseline", metavar="REF", help="also time the controller of this commit (e.g. main), interleaved")
    ap.add_argument("--top", type=int, default=15, help="rows of each import table")
    ap.add_argument("--hide", default="rich,click,pygments", help="comma-separated modules whose import fails in the timed runs")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    hidden = [m for m in args.hide.split(",") if m]

    import docker

    client = docker.from_env(timeout=120)
    build_test_image(client, IMAGES["v1"], version="v1")
    work = Path(tempfile.mkdtemp(prefix="bluegreen-bench-startup-"))
    ctl = ControllerSide(f"bench-start-{os.urandom(3).hex()}", work, 0.1)
    observer = work / "observer.py"
    observer.write_text(OBSERVER)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # the trees are compiled below; a run writes nothing into them
    if hidden:  # a module of that name earlier on sys.path than site-packages, whose import fails
        (work / "hide").mkdir()
        for m in hidden:
            (work / "hide" / f"{m}.py").write_text(f"raise ImportError('{m} hidden by bench_startup.py --hide')\n")
        env["PYTHONPATH"] = str(work / "hide")
    trees = {"branch": ROOT}
    if args.baseline:
        trees[args.baseline] = export_tree(args.baseline, work / "baseline")
    for tree_dir in trees.values():
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree_dir / "controller")], check=True, stdout=subprocess.DEVNULL)
    py = sys.executable
    textfile = work / "metrics" / "bluegreen.prom"
    textfile.parent.mkdir()

    def controller(tree: str, mode: str) -> list[str]:
        state = ctl.state if tree == "branch" else work / f"state-{tree}"
        argv = [py, "-m", "controller", f"--{mode.split('+')[0]}", "-f", str(ctl.spec), "--state-dir", str(state)]
        argv += ["--log-level", "info", "--log-format", "json"]
        return argv + (["--metrics-textfile", str(textfile)] if mode == "once+prom" else [])

    sides: dict[str, tuple[list[str], Path]] = {
        "observer": ([py, str(observer), ctl.name, str(ctl.ports["blue"]), str(ctl.marker)], work),
        "python": ([py, "-c", "pass"], work),
    }
    for tree, path in trees.items():
        for mode in (*MODES, "once+prom") if tree == "branch" else MODES:
            sides[f"{tree} {mode}"] = (controller(tree, mode), path)
    samples: dict[str, list[Sample]] = {k: [] for k in sides}
    load_before = os.getloadavg()
    try:
        ctl.reset()  # untimed: v1 on blue serves; the next --once has nothing to do
        for argv, cwd in sides.values():  # warm: the first run writes status, fills the spec cache, the page cache
            measure(argv, cwd, env, work / "warm.out")
        order = list(sides)
        for i in range(args.repetitions):
            for label in order if i % 2 == 0 else order[::-1]:
                argv, cwd = sides[label]
                samples[label].append(measure(argv, cwd, env, work / "run.out"))
            print(f"repetition {i + 1}/{args.repetitions}: " + "  ".join(f"{k} {v[-1].wall * 1000:.0f}ms" for k, v in samples.items()), flush=True)
        imports, import_total = import_costs(controller("branch", "once"), ROOT, env, max(3, args.repetitions // 4))
    finally:
        remove_containers(client, [{"label": f"bluegreen.app={ctl.name}"}])
        ctl.nginx.stop()
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()

    def ratios(label: str, what: str) -> list[float]:
        return [getattr(a, what) / getattr(b, what) for a, b in zip(samples[label], samples["observer"], strict=True)]

    n = args.repetitions
    rows: dict[str, dict[str, float]] = {}
    print(f"\n{'side (n=' + str(n) + ', medians)':<24} {'wall s':>7} {'CPU s':>7} {'RSS MiB':>8} {'wall ratio':>11} {'CPU ratio':>10}")
    for label, runs in samples.items():
        row = {
            "wall_s": statistics.median(s.wall for s in runs),
            "cpu_s": statistics.median(s.cpu for s in runs),
            "rss_mib": statistics.median(s.rss_kib or 0 for s in runs) / 1024 if GNU_TIME else float("nan"),
            "wall_ratio": statistics.median(ratios(label, "wall")),
            "cpu_ratio": statistics.median(ratios(label, "cpu")),
        }
        rows[label] = row
        print(f"{label:<24} {row['wall_s']:>7.3f} {row['cpu_s']:>7.3f} {row['rss_mib']:>8.1f} {row['wall_ratio']:>10.2f}x {row['cpu_ratio']:>9.2f}x")
    print(f"\nratios are medians of the per-repetition ratios to the observer; goal: <= {GOAL}x (issue 18 item 8)")
    for tree in trees:
        verdicts = [f"{m} {rows[f'{tree} {m}']['wall_ratio']:.2f}x ({'within' if rows[f'{tree} {m}']['wall_ratio'] <= GOAL else 'over'})" for m in MODES]
        print(f"  {tree}: " + ", ".join(verdicts))
    print(f"hidden modules (import fails, as without the [test] extra): {', '.join(hidden) or 'none'}")
    print(f"load average before/after: {' '.join(f'{x:.1f}' for x in load_before)} / {' '.join(f'{x:.1f}' for x in load_after)}")

    ranked = sorted(imports.items(), key=lambda kv: kv[1], reverse=True)
    print(f"\nimports of the branch's no-op --once (-X importtime, median): {import_total:.0f} ms in all")
    for title, top in (
        ("package", [kv for kv in ranked if "." not in kv[0]][: args.top]),
        ("controller module", [kv for kv in ranked if kv[0].startswith("controller.")][: args.top]),
    ):
        print(f"{title:<32} {'cumulative ms':>13}")
        for name, ms in top:
            print(f"{name:<32} {ms:>13.1f}")

    result: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "python": platform.python_version(),
        "repetitions": n,
        "baseline": args.baseline,
        "hidden_modules": hidden,
        "goal": GOAL,
        "sides": rows,
        "samples": {k: [{"wall_s": s.wall, "cpu_s": s.cpu, "rss_kib": s.rss_kib} for s in v] for k, v in samples.items()},
        "import_total_ms": import_total,
        "imports_cumulative_ms": dict(ranked),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"startup-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
