"""Controller against the same steps done by hand, side by side, in one run on this machine.

Three operations, each timed N times (alternating controller / by hand, and which goes first):
  deploy    v1 on blue serves -> v2 on green serves (new container, health check, switch, confirm, marker)
  rollback  v2 on green serves, v1 still runs on blue -> blue serves again (switch only)
  noop      nothing to do (the controller observes everything and changes nothing)

Controller: the real CLI, `python -m controller --once -f SPEC` (a fresh interpreter, as cron runs it),
nginx.switch: reload. By hand: what a careful shell script does with the docker CLI, curl and nginx:
  deploy    docker run -d ... v2; curl the health endpoint until 200; write the upstream include;
            nginx -t; nginx -s reload; curl through nginx until the green container answers; write the marker
  rollback  write the include; nginx -t; nginx -s reload; curl through nginx until blue answers; write the marker
  noop      docker ps; curl the health endpoint; cat the marker
Each side has its own private nginx (tests/support/nginx.py) and its own app, on 127.0.0.1 only.

    sudo .venv/bin/python bench/bench_core.py [-n 5] [--interval 0.1]

Prints a table (median seconds, ratio controller/by hand) and writes bench/results/core-<time>.json.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from controller.app.routing import render_include  # noqa: E402
from controller.spec.app import BlueGreenApp  # noqa: E402
from tests.support.containers import remove_containers  # noqa: E402
from tests.support.images import build_test_image  # noqa: E402
from tests.support.net import free_port  # noqa: E402
from tests.support.nginx import NginxInstance  # noqa: E402

IMAGES = {"v1": "bluegreen-bench:v1", "v2": "bluegreen-bench:v2"}
OPS = ("deploy", "rollback", "noop")
LABEL = "bench.bluegreen"


def sh(argv: list[str], timeout: float = 60) -> str:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({p.returncode}): {(p.stderr or p.stdout).strip()[-500:]}")
    return p.stdout


class Side:
    def __init__(self, name: str, work: Path, interval: float) -> None:
        self.name = name
        self.dir = work / name
        self.dir.mkdir(parents=True)
        self.nginx = NginxInstance.start(self.dir / "nginx", [name])
        self.ports = {"blue": free_port(), "green": free_port()}
        self.marker = self.dir / "state" / name / "active"
        self.state = self.dir / "state"
        self.spec = self.dir / "spec.yaml"
        self.interval = interval

    def doc(self, version: str, color: str) -> dict[str, Any]:
        return {
            "apiVersion": "bluegreen/v1",
            "kind": "BlueGreenApp",
            "metadata": {"name": self.name},
            "spec": {
                "image": IMAGES[version],
                "activeColor": color,
                "ports": dict(self.ports),
                # stableSeconds 0: the shell steps switch on the first passing probe, so the controller does too
                # here; its default (2 s of continued passing) would add 2 s to the deploy row.
                "healthCheck": {"intervalSeconds": self.interval, "timeoutSeconds": 60, "stableSeconds": 0},
                "standby": "keep",
                "marker": str(self.marker),
                "labels": {LABEL: "1"},
                "keepImages": 10_000,  # the shared bgtest:* images are not this app's to prune
                "nginx": {
                    "upstreamFile": str(self.nginx.upstream_file(self.name)),
                    "testCommand": self.nginx.test_command,
                    "reloadCommand": self.nginx.reload_command,
                    "controlUrl": self.nginx.control_url,
                    "switch": "reload",
                },
            },
        }

    def app(self, version: str, color: str) -> BlueGreenApp:
        return BlueGreenApp.model_validate(self.doc(version, color))

    def remove(self, color: str) -> None:
        subprocess.run(["docker", "rm", "-f", f"{self.name}-{color}"], capture_output=True, check=False, timeout=60)


class ControllerSide(Side):
    def want(self, version: str, color: str) -> None:
        self.spec.write_text(yaml.safe_dump(self.doc(version, color), sort_keys=False))

    def once(self) -> None:
        argv = [sys.executable, "-m", "controller", "--once", "-f", str(self.spec), "--state-dir", str(self.state), "--log-level", "warning"]
        p = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
        if p.returncode != 0:
            raise RuntimeError(f"controller --once failed ({p.returncode}): {p.stdout}{p.stderr}")

    def reset(self) -> None:
        """Untimed: v1 on blue serves, no green container."""
        self.remove("green")
        self.want("v1", "blue")
        self.once()

    def deploy(self) -> None:
        self.want("v2", "green")
        self.once()

    def rollback(self) -> None:
        self.want("v1", "blue")
        self.once()

    def noop(self) -> None:
        self.once()


class ManualSide(Side):
    def curl_status(self, url: str) -> str:
        p = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", url], capture_output=True, text=True, check=False)
        return p.stdout.strip()

    def wait_healthy(self, color: str) -> None:
        url = f"http://127.0.0.1:{self.ports[color]}/actuator/health"
        deadline = time.monotonic() + 60
        while self.curl_status(url) != "200":
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} not healthy")
            time.sleep(self.interval)

    def switch(self, color: str, version: str) -> None:
        # The same include the controller writes, so nginx does the same work on both sides.
        path = self.nginx.upstream_file(self.name)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(render_include(self.app(version, color), color))
        os.replace(tmp, path)
        sh(self.nginx.test_command)
        sh(self.nginx.reload_command)
        # A reload is asynchronous: only an answer from the new container proves the switch.
        url = f"{self.nginx.public_url}/version"
        deadline = time.monotonic() + 30
        while True:
            out = subprocess.run(["curl", "-s", "--max-time", "2", url], capture_output=True, text=True, check=False).stdout
            if out.split()[:1] == [version]:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"nginx does not route to {color}: {out!r}")
            time.sleep(0.05)
        self.marker.parent.mkdir(parents=True, exist_ok=True)
        self.marker.write_text(f"{color}\n")

    def run(self, color: str, version: str) -> None:
        sh(
            [
                "docker", "run", "-d", "--name", f"{self.name}-{color}",
                "-p", f"127.0.0.1:{self.ports[color]}:8081",
                "--label", f"bluegreen.app={self.name}", "--label", f"{LABEL}=1",
                "--restart", "unless-stopped", IMAGES[version],
            ]
        )

    def reset(self) -> None:
        self.remove("green")
        self.remove("blue")
        self.run("blue", "v1")
        self.wait_healthy("blue")
        self.switch("blue", "v1")

    def deploy(self) -> None:
        self.run("green", "v2")
        self.wait_healthy("green")
        self.switch("green", "v2")

    def rollback(self) -> None:
        self.switch("blue", "v1")

    def noop(self) -> None:
        sh(["docker", "ps", "--filter", f"name=^{self.name}-", "--format", "{{.Names}} {{.Image}} {{.Status}}"])
        live = self.marker.read_text().strip()
        if self.curl_status(f"http://127.0.0.1:{self.ports[live]}/actuator/health") != "200":
            raise RuntimeError("live color unhealthy")
        sh(["cat", str(self.marker)])


def timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--repetitions", type=int, default=5)
    ap.add_argument("--interval", type=float, default=0.1, help="health-check poll interval, both sides (s)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()

    import docker

    client = docker.from_env(timeout=120)
    for v, tag in IMAGES.items():
        build_test_image(client, tag, version=v)
    work = Path(tempfile.mkdtemp(prefix="bluegreen-bench-"))
    suffix = os.urandom(3).hex()
    ctl = ControllerSide(f"bench-ctl-{suffix}", work, args.interval)
    man = ManualSide(f"bench-man-{suffix}", work, args.interval)
    times: dict[str, dict[str, list[float]]] = {op: {"controller": [], "manual": []} for op in OPS}
    startup: list[float] = []
    try:
        for i in range(args.repetitions):
            sides = [("controller", ctl), ("manual", man)]
            if i % 2:
                sides.reverse()
            for _, side in sides:
                side.reset()
            for op in OPS:
                for label, side in sides:
                    times[op][label].append(timed(getattr(side, op)))
            # What the controller's figures include before any work: a fresh interpreter importing it.
            startup.append(timed(lambda: sh([sys.executable, "-m", "controller", "--version"])))
            print(f"repetition {i + 1}/{args.repetitions}: " + "  ".join(f"{op} {times[op]['controller'][-1]:.2f}/{times[op]['manual'][-1]:.2f}s" for op in OPS), flush=True)
    finally:
        remove_containers(client, [{"label": f"bluegreen.app={s.name}"} for s in (ctl, man)])
        for s in (ctl, man):
            s.nginx.stop()
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    print(f"\n{'operation':<10} {'controller (median)':>20} {'by hand (median)':>17} {'ratio':>7}")
    for op in OPS:
        c, m = statistics.median(times[op]["controller"]), statistics.median(times[op]["manual"])
        rows.append({"operation": op, "controller_median_s": c, "manual_median_s": m, "ratio": c / m, **times[op]})
        print(f"{op:<10} {c:>19.3f}s {m:>16.3f}s {c / m:>7.2f}")
    print(f"{'startup':<10} {statistics.median(startup):>19.3f}s {'-':>17} {'-':>7}   (python -m controller --version: interpreter + imports)")
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "python": platform.python_version(),
        "repetitions": args.repetitions,
        "interval_s": args.interval,
        "switch": "reload",
        "results": rows,
        "controller_startup_s": startup,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"core-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
