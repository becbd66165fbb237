"""Releases on a real host (issue 21): real dockerd, real nginx, the real CLI as a subprocess, SSM on moto, a
loopback webhook.

Three releases of the app's own repository (keepImages: 3); `reconcile releases` marks #2 a switch (green still
runs it, warm) and #1 a deploy (its image kept by pruning while older unused images of the repository went);
`rollback --to 2` is a switch, `rollback --to 1` a deploy; the table shows how each release ended. A failed deploy
whose hook prints the SSM secret ends the run. The webhook got every event in order and no body holds the secret;
receivers that hang or answer 500 were on the line for a cutover, which still switched at once.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.controller_run import ROOT, Run, World, subprocess_env
from tests.support.images import build_test_image, remove_repositories
from tests.support.moto import REGION, MotoServer
from tests.support.nginx import NginxInstance
from tests.support.webhook import Receiver
from tests.test_real_pruning import load_image, present

pytestmark = [pytest.mark.docker, pytest.mark.nginx, pytest.mark.slow]


@pytest.fixture
def repo(docker_client: Any, session_id: str) -> Iterator[str]:
    """This test's repository: every image in it is removed at the end."""
    name = f"bgtest-releases-{session_id}-{os.urandom(3).hex()}"
    yield name
    remove_repositories(docker_client, [name])


@pytest.fixture
def receivers() -> Iterator[dict[str, Receiver]]:
    made = {m: Receiver(m) for m in ("ok", "fail", "hang")}
    yield made
    for r in made.values():
        r.close()


class ReleaseWorld(World):
    def __init__(self, *args: Any, env: dict[str, str], urls: list[str], **spec: Any) -> None:
        super().__init__(*args, **spec)
        self.env = env
        self.urls = urls

    def cli(self, *args: str, timeout: float = 90.0) -> Run:
        import subprocess
        import sys

        notify = [a for u in self.urls for a in ("--notify-url", u)] if args[0] in ("--once", "rollback") else []
        argv = [sys.executable, "-m", "controller", *args, *notify, "-f", str(self.spec_path), "--state-dir", str(self.state)]
        started = time.monotonic()
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=subprocess_env(self.env), cwd=str(ROOT),
                           stdin=subprocess.DEVNULL)
        r = Run(p.args, p.returncode, p.stdout, p.stderr)
        r.elapsed = time.monotonic() - started
        return r

    def once(self, *args: str, expect: int = 0, timeout: float = 90.0) -> Run:
        r = self.cli("--once", "--log-format", "json", *args, timeout=timeout)
        assert r.returncode == expect, r.explain()
        return r

    def releases(self) -> list[dict[str, Any]]:
        r = self.cli("releases", "--json")
        assert r.returncode == 0, r.explain()
        data: dict[str, Any] = json.loads(r.stdout)
        return list(data["releases"])


def _switch_seconds(r: Run) -> float:
    [done] = [line for line in r.logs() if line.get("event") == "action.done" and line.get("action") == "SwitchRoute"]
    return float(done["seconds"])


def test_three_releases_rollback_to_any_retained_one_and_every_event_notified(
    moto: MotoServer, docker_client: Any, test_images: dict[str, str], app_name: str, nginx: NginxInstance,
    tmp_path: Path, session_id: str, repo: str, receivers: dict[str, Receiver],
) -> None:
    base = f"/{app_name}/prod/"
    secret = f"sk-{uuid.uuid4().hex}"
    moto.client("ssm").put_parameter(Name=base + "API_KEY", Value=secret, Type="SecureString", Overwrite=True)
    images = {v: build_test_image(docker_client, f"{repo}:{v}", version=v) for v in ("r1", "r2")}
    old = {j: load_image(docker_client, [f"{repo}:{j}"], "2001-01-01T00:00:00Z") for j in ("j1", "j2")}  # unused, old
    ok = receivers["ok"]
    w = ReleaseWorld(docker_client, app_name, nginx, tmp_path, session_id, env=moto.env(region=None), urls=[ok.url],
                     keepImages=3, healthCheck={"stableSeconds": 0.5}, secrets={"ssm": {"path": base, "region": REGION}})

    # Three releases. The second with receivers that hang and answer 500 on the line too: the switch is no slower.
    w.set(image=f"{repo}:r1")
    first = w.once()
    w.assert_serving("blue", "r1")
    w.urls = [ok.url, receivers["hang"].url, receivers["fail"].url]
    w.set(image=f"{repo}:r2", activeColor="green")
    second = w.once()
    w.assert_serving("green", "r2")
    assert _switch_seconds(second) < 2.0 and _switch_seconds(first) < 2.0, (first.explain(), second.explain())
    assert [m for m in second.logs() if m.get("event") == "notify.failed"], second.explain()  # said once, the run still 0
    receivers["hang"].wait_for(1)
    # The old unused images went with release #2; the next release's image, made after #2 took traffic, is kept
    # until it is deployed (pruning runs after every converged pass).
    assert present(docker_client, {**images, **old}) == {"r1", "r2"}
    images["r3"] = build_test_image(docker_client, f"{repo}:r3", version="r3")
    w.once()
    assert present(docker_client, images) == {"r1", "r2", "r3"}
    w.urls = [ok.url]
    w.set(image=f"{repo}:r3", activeColor="blue")
    w.once()
    w.assert_serving("blue", "r3")
    # Pruning (keepImages: 3): the images of the three releases stay, r1's though no container uses it any more.
    assert present(docker_client, {**images, **old}) == {"r1", "r2", "r3"}

    table = w.releases()
    assert [(r["number"], r["image"], r["ended"], r["rollback"]["way"]) for r in table] == [
        (3, f"{repo}:r3", "live", "live"),
        (2, f"{repo}:r2", "replaced", "switch"),  # green still runs it, warm
        (1, f"{repo}:r1", "replaced", "deploy"),  # its image is present: a health-gated deploy
    ], table
    assert all(r["actor"] and r["imageId"].startswith("sha256:") for r in table), table
    human = w.cli("releases")
    assert human.returncode == 0 and human.stdout.splitlines()[0] == f"{app_name}: 3 releases (newest first)", human.explain()

    # rollback --to 2: a switch (no container created).
    before = {c: w.container(c).id for c in ("blue", "green")}
    r = w.cli("rollback", "--to", "2", "--apply")
    assert r.returncode == 0, r.explain()
    assert "note: rollback to release #2" in r.stderr and "a switch" in r.stderr, r.explain()
    w.assert_serving("green", "r2")
    assert {c: w.container(c).id for c in ("blue", "green")} == before
    # rollback --to 1: a deploy of r1's retained image on blue.
    r = w.cli("rollback", "--to", "1", "--apply")
    assert r.returncode == 0, r.explain()
    assert "a deploy of" in r.stderr, r.explain()
    w.assert_serving("blue", "r1")
    assert w.container("blue").id != before["blue"]
    refused = w.cli("rollback", "--to", "5")
    assert refused.returncode == 2 and "is the live release" in refused.stderr, refused.explain()

    table = w.releases()
    assert [(r["number"], r["image"], r["began"], r["ended"]) for r in table] == [
        (5, f"{repo}:r1", "rollback", "live"),
        (4, f"{repo}:r2", "rollback", "rolled-back"),
        (3, f"{repo}:r3", "deploy", "rolled-back"),
        (2, f"{repo}:r2", "deploy", "replaced"),
        (1, f"{repo}:r1", "deploy", "replaced"),
    ], table

    # A failed deploy whose hook prints the secret.
    w.set(image=test_images["v2"], activeColor="green",
          hooks={"beforeSwitch": {"command": ["sh", "-c", 'echo "key=$API_KEY"; exit 3'], "timeoutSeconds": 20}})
    w.once(expect=1)
    w.assert_serving("blue", "r1")

    bodies = ok.wait_for(6)
    assert [(b["event"], (b.get("release") or {}).get("number")) for b in bodies] == [
        ("cutover", 1), ("cutover", 2), ("cutover", 3), ("rollback", 4), ("rollback", 5), ("deploy-failed", None)
    ], bodies
    assert all(b["app"] == app_name and b["text"].startswith(f"{app_name}: ") and b["actor"]["user"] for b in bodies)
    assert bodies[3]["previous"]["number"] == 3 and bodies[4]["release"]["image"] == f"{repo}:r1"
    assert "exited 3: key=" in bodies[5]["message"] and "exited 3: key=" in bodies[5]["text"]
    everything = json.dumps(bodies) + json.dumps(receivers["fail"].bodies) + json.dumps(receivers["hang"].bodies)
    assert secret not in everything and secret[3:] not in everything
