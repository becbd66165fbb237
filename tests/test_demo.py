"""scripts/demo.sh (README "First two commands") with its accessory part (issue 13, item 6).

The shipped demo directory validates as one spec directory (a Redis accessory with a named volume on loopback,
the app `dependsOn` it and shares its network); run end to end on the real dockerd and nginx, the demo creates
the accessory before the app, holds a new color with DependencyNotReady while the live one serves, heals the
accessory with its data intact, and leaves no container, network or volume behind. The demo uses fixed names
(bgdemo*), so this is the one test that runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from controller.accessory.plan import recreate_note
from controller.spec.directory import select
from tests.support.redis_image import RedisImageUnavailable, build_redis_image

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "specs" / "demo"


def test_demo_directory_declares_an_accessory_the_app_depends_on() -> None:
    sel = select(DEMO)
    assert sel.problems == []
    (acc,) = sel.accessories
    (app,) = sel.apps
    assert acc.name == "bgdemo-redis" and acc.spec.volumes == {"bgdemo-redis-data": "/data"}
    assert acc.spec.bindAddress == "127.0.0.1" and list(acc.spec.ports) == ["6379"]
    assert app.spec.dependsOn == [acc.name] and app.spec.network == acc.spec.network == "bgdemo-net"
    note = recreate_note(acc)
    assert note is not None and "backup command runs first" in note


def _leftovers(client: Any) -> list[str]:
    left = [c.name for c in client.containers.list(all=True, filters={"label": "bluegreen.app=bgdemo"})]
    left += [c.name for c in client.containers.list(all=True, filters={"label": "bluegreen.accessory=bgdemo-redis"})]
    left += [n.name for n in client.networks.list(names=["bgdemo-net"]) if n.name == "bgdemo-net"]
    left += [v.name for v in client.volumes.list(filters={"name": "bgdemo-redis-data"}) if v.name == "bgdemo-redis-data"]
    return left


def test_demo_runs_the_accessory_and_the_dependency_gate_and_cleans_up(docker_client: Any) -> None:
    try:
        build_redis_image(docker_client)  # the demo builds the same tag; skip like the other Redis tests
    except RedisImageUnavailable as e:
        pytest.skip(str(e))
    env = {**os.environ, "BLUEGREEN_DEMO_SKIP_SETUP": "1", "PYTHON": sys.executable}
    env.pop("BLUEGREEN_STATE_DIR", None)
    p = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo.sh")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=150, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    out = p.stdout  # the demo's lines and the controller's logs, in order (one pipe)
    assert p.returncode == 0, out[-3000:]

    def at(text: str, after: int = 0) -> int:
        i = out.find(text, after)
        assert i >= 0, f"{text!r} not in the demo's output after {after}:\n{out[after:][-3000:]}"
        return i

    # The accessory is created and healthy before the app's first color starts.
    i = at("CreateAccessory(bgdemo-redis)")
    i = at("bgdemo-redis: converged (accessory, 4 actions)", i)
    i = at("action=CreateContainer app=bgdemo color=blue", i)
    i = at("HTTP 200  v1 blue", i)
    i = at("\n:1   (exit 0: bgdemo-blue -> bgdemo-redis:6379 on bgdemo-net)", i)  # the app reaches it by name
    i = at("bgdemo-redis (accessory, bgtest-redis:", i)
    i = at("): Ready; healthy=True", i)
    # Stopped: --plan names the gate for the new color, and blue keeps serving.
    i = at("$ docker stop bgdemo-redis", i)
    i = at("blocked: DependencyNotReady: dependsOn not healthy (bgdemo-redis: exited): the new color waits; blue keeps serving", i)
    i = at("HTTP 200  v1 blue", i)
    # --once heals the accessory first (its data on the volume intact: the counter goes on), then deploys green.
    i = at("StartAccessory(bgdemo-redis)", i)
    i = at("action=CreateContainer app=bgdemo color=green", i)
    i = at("HTTP 200  v2 green", i)
    i = at("\n:2   (exit 0: bgdemo-green -> bgdemo-redis:6379 on bgdemo-net)", i)
    i = at("bgdemo-redis: converged (accessory)\n", i)
    at("cleaned up: containers ", i)
    assert _leftovers(docker_client) == []
