"""The demo behind scripts/demo.sh: blue v1 -> green v2 on a real dockerd behind a private real nginx.

Everything it starts is on 127.0.0.1 and is removed on exit (containers labelled bluegreen.app=bgdemo,
the nginx instance, the temporary directory), also on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.containers import remove_containers  # noqa: E402
from tests.support.images import build_test_image  # noqa: E402
from tests.support.net import free_port  # noqa: E402
from tests.support.nginx import NginxInstance  # noqa: E402

APP = "bgdemo"
SPEC_TEMPLATE = ROOT / "specs" / "demo" / f"{APP}.yaml"
BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def step(text: str) -> None:
    print(f"\n{BOLD}==> {text}{RESET}", flush=True)


def reconcile(spec: Path, state: Path, *args: str) -> int:
    argv = [sys.executable, "-m", "controller", *args, "-f", str(spec), "--state-dir", str(state), "--log-format", "console"]
    print(f"{DIM}$ reconcile {' '.join(args)} -f {spec}{RESET}", flush=True)
    code = subprocess.run(argv, cwd=ROOT, check=False).returncode
    print(f"{DIM}(exit {code}){RESET}", flush=True)
    return code


def through_nginx(url: str) -> None:
    print(f"{DIM}$ curl {url}/version{RESET}", flush=True)
    r = httpx.get(f"{url}/version", timeout=5, trust_env=False)
    print(f"HTTP {r.status_code}  {r.text.strip()}   (served by the {r.headers.get('X-App-Color', '?')} container)", flush=True)


def write_spec(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def main() -> int:
    import docker

    client = docker.from_env(timeout=120)
    work = Path(tempfile.mkdtemp(prefix="bluegreen-demo-"))
    nginx: NginxInstance | None = None
    if os.environ.get("BLUEGREEN_DEMO_WORKFILE"):  # tells demo.sh's backstop cleanup what to remove
        Path(os.environ["BLUEGREEN_DEMO_WORKFILE"]).write_text(str(work))

    def cleanup() -> None:
        removed = remove_containers(client, [{"label": f"bluegreen.app={APP}"}])
        if nginx is not None:
            nginx.stop()
        shutil.rmtree(work, ignore_errors=True)
        print(f"\n{DIM}cleaned up: containers {', '.join(removed) or 'none'}, nginx, {work}{RESET}", flush=True)

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    try:
        remove_containers(client, [{"label": f"bluegreen.app={APP}"}])  # a previous, interrupted demo
        step("Building demo images bluegreen-demo:v1 and :v2 (FROM scratch: static busybox + CGI scripts)")
        for v in ("v1", "v2"):
            build_test_image(client, f"bluegreen-demo:{v}", version=v)
            print(f"bluegreen-demo:{v}")

        step("Starting a private nginx on loopback (upstream include + control server, as docs/spec.md says)")
        nginx = NginxInstance.start(work / "nginx", [APP])
        (work / "nginx" / "pid").write_text(str(nginx.process.pid if nginx.process else ""))
        print(f"public site  {nginx.public_url}\ncontrol      {nginx.control_url}\nconfig       {nginx.conf_path}")

        doc = yaml.safe_load(SPEC_TEMPLATE.read_text())
        s = doc["spec"]
        s["ports"] = {"blue": free_port(), "green": free_port()}
        s["marker"] = str(work / "state" / APP / "active")
        s["nginx"].update(
            upstreamFile=str(nginx.upstream_file(APP)),
            testCommand=nginx.test_command,
            reloadCommand=nginx.reload_command,
            controlUrl=nginx.control_url,
        )
        specs = work / "specs"
        specs.mkdir()
        spec = specs / f"{APP}.yaml"
        state = work / "state"
        write_spec(spec, doc)
        step(f"Desired state: {s['image']} on {s['activeColor']} ({spec})")
        print(spec.read_text(), end="")

        step("reconcile --plan: what would change (exit 1 = changes pending)")
        reconcile(spec, state, "--plan")
        step("reconcile --once: create blue, wait for its health check, switch nginx, confirm, write the marker")
        if reconcile(spec, state, "--once") != 0:
            return 1
        through_nginx(nginx.public_url)

        s["image"], s["activeColor"] = "bluegreen-demo:v2", "green"
        write_spec(spec, doc)
        step("Deploy: image bluegreen-demo:v2 and activeColor: green")
        reconcile(spec, state, "--plan")
        if reconcile(spec, state, "--once") != 0:
            return 1
        through_nginx(nginx.public_url)
        print(f"marker {s['marker']}: {Path(s['marker']).read_text().strip()}")

        step("reconcile --status")
        reconcile(spec, state, "--status")
        step("reconcile --once again: converged, nothing to do")
        reconcile(spec, state, "--once")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        cleanup()


if __name__ == "__main__":
    os.environ.pop("BLUEGREEN_STATE_DIR", None)
    sys.exit(main())
