"""The demo behind scripts/demo.sh: blue v1 -> green v2 on a real dockerd behind a private real nginx, with a
real Redis accessory (issue 13) the app `dependsOn` and shares a network with.

Everything it starts is on 127.0.0.1 and is removed on exit (containers labelled bluegreen.app=bgdemo and
bluegreen.accessory=bgdemo-redis, the network bgdemo-net and the demo's own volume bgdemo-redis-data, the nginx
instance, the temporary directory), also on Ctrl-C / SIGTERM.
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
from tests.support.redis_image import RedisImageUnavailable, build_redis_image  # noqa: E402

APP = "bgdemo"
SPEC_TEMPLATE = ROOT / "specs" / "demo" / f"{APP}.yaml"
REDIS = "bgdemo-redis"  # the accessory: its container, and its name on the network
REDIS_TEMPLATE = ROOT / "specs" / "demo" / f"{REDIS}.yaml"
NETWORK, VOLUME = "bgdemo-net", "bgdemo-redis-data"
OURS = [{"label": f"bluegreen.app={APP}"}, {"label": f"bluegreen.accessory={REDIS}"}]
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


def remove_network_and_volume(client: Any) -> list[str]:
    """The demo's own network and volume (the controller never removes a volume; the demo removes its own)."""
    gone = []
    for n in client.networks.list(names=[NETWORK]):
        if n.name == NETWORK:
            n.remove()
            gone.append(f"network {NETWORK}")
    for v in client.volumes.list(filters={"name": VOLUME}):
        if v.name == VOLUME:
            v.remove(force=True)
            gone.append(f"volume {VOLUME}")
    return gone


def app_reaches_redis(client: Any, color: str) -> None:
    """The app's container talks to the accessory by name over the shared network (busybox nc, a RESP INCR):
    the counter survives the stop and start of the accessory because its data is on the named volume."""
    c = client.containers.get(f"{APP}-{color}")
    cmd = f"printf 'INCR bgdemo:colors\\r\\n' | /bin/busybox nc -w 2 {REDIS} 6379"
    print(f"{DIM}$ docker exec {c.name} sh -c \"{cmd}\"{RESET}", flush=True)
    code, out = c.exec_run(["/bin/busybox", "sh", "-c", cmd])
    print(f"{out.decode(errors='replace').strip()}   (exit {code}: {c.name} -> {REDIS}:6379 on {NETWORK})", flush=True)


def main() -> int:
    import docker

    client = docker.from_env(timeout=120)
    work = Path(tempfile.mkdtemp(prefix="bluegreen-demo-"))
    nginx: NginxInstance | None = None
    if os.environ.get("BLUEGREEN_DEMO_WORKFILE"):  # tells demo.sh's backstop cleanup what to remove
        Path(os.environ["BLUEGREEN_DEMO_WORKFILE"]).write_text(str(work))

    def cleanup() -> None:
        removed = remove_containers(client, OURS)
        gone = remove_network_and_volume(client)
        if nginx is not None:
            nginx.stop()
        shutil.rmtree(work, ignore_errors=True)
        print(f"\n{DIM}cleaned up: containers {', '.join(removed) or 'none'}, {', '.join([*gone, 'nginx'])}, {work}{RESET}", flush=True)

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    try:
        remove_containers(client, OURS)  # a previous, interrupted demo
        remove_network_and_volume(client)
        step("Building demo images bluegreen-demo:v1 and :v2 (FROM scratch: static busybox + CGI scripts)")
        for v in ("v1", "v2"):
            build_test_image(client, f"bluegreen-demo:{v}", version=v)
            print(f"bluegreen-demo:{v}")
        step("Building the Redis image of the accessory (FROM scratch: Debian's redis-server and redis-cli, their libraries)")
        try:
            redis_image = build_redis_image(client)
        except RedisImageUnavailable as e:
            print(f"demo: {e}", file=sys.stderr)
            return 1
        print(redis_image)

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
        acc = yaml.safe_load(REDIS_TEMPLATE.read_text())
        acc["spec"]["image"] = redis_image
        acc["spec"]["ports"] = {"6379": free_port()}
        # One spec directory: the accessory is reconciled before the app that dependsOn it.
        specs = work / "specs"
        specs.mkdir()
        spec = specs / f"{APP}.yaml"
        state = work / "state"
        write_spec(spec, doc)
        write_spec(specs / f"{REDIS}.yaml", acc)
        step(f"Desired state: {s['image']} on {s['activeColor']}, dependsOn {s['dependsOn']}, network {s['network']} ({specs})")
        print(spec.read_text(), end="")
        print(f"{DIM}--- {specs / f'{REDIS}.yaml'}{RESET}")
        print((specs / f"{REDIS}.yaml").read_text(), end="")

        step("reconcile --plan: what would change (exit 1 = changes pending)")
        reconcile(specs, state, "--plan")
        step(f"reconcile --once: {REDIS} first (network, volume, container, health), then blue, nginx switch, marker")
        if reconcile(specs, state, "--once") != 0:
            return 1
        through_nginx(nginx.public_url)
        app_reaches_redis(client, "blue")
        step("reconcile --status: the accessory beside the app")
        reconcile(specs, state, "--status")

        step(f"The dependsOn gate: stop {REDIS}, then ask for a new color (bluegreen-demo:v2 on green)")
        client.containers.get(REDIS).stop(timeout=5)
        print(f"{DIM}$ docker stop {REDIS}{RESET}")
        s["image"], s["activeColor"] = "bluegreen-demo:v2", "green"
        write_spec(spec, doc)
        reconcile(specs, state, "--plan")
        print("the live color keeps serving while its dependency is down:")
        through_nginx(nginx.public_url)

        step(f"reconcile --once: start {REDIS}, wait healthy, then deploy green")
        if reconcile(specs, state, "--once") != 0:
            return 1
        through_nginx(nginx.public_url)
        app_reaches_redis(client, "green")
        print(f"marker {s['marker']}: {Path(s['marker']).read_text().strip()}")

        step("reconcile --status")
        reconcile(specs, state, "--status")
        step("reconcile --once again: converged, nothing to do")
        reconcile(specs, state, "--once")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        cleanup()


if __name__ == "__main__":
    os.environ.pop("BLUEGREEN_STATE_DIR", None)
    sys.exit(main())
