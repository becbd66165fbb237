"""Image pruning on a real dockerd: the releases' images and every protected one kept, across a kill -9 mid-prune.

Images are this test's own (repository `bgtest-hygiene-<session>`, never the shared `bgtest:*`): the two
colors are runnable test images; the old ones are tiny images loaded with a chosen creation time. They are
removed at the end whatever happens.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.drivers.containers import DockerDriver
from controller.world.fake import FakeImage, FakeWorld
from controller.world.protocol import ContainerRequest
from tests.support.controller_run import World, history, start_reconcile
from tests.support.images import build_test_image, remove_repositories
from tests.support.nginx import NginxInstance

pytestmark = [pytest.mark.docker, pytest.mark.nginx]


def _add(t: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    t.addfile(info, io.BytesIO(data))


def load_image(client: Any, tags: list[str], created: str) -> str:
    """A one-file image named `tags`, created at `created` (RFC 3339), loaded like `docker load`; its id."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as t:
        _add(t, "id.txt", " ".join(tags).encode())
    blob = layer.getvalue()
    config = json.dumps({
        "architecture": client.version().get("Arch", "amd64"), "os": "linux", "created": created, "config": {"Cmd": ["/id.txt"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(blob).hexdigest()]},
        "history": [{"created": created, "created_by": "tests/test_real_pruning.py"}],
    }).encode()
    name = hashlib.sha256(config).hexdigest() + ".json"
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as t:
        _add(t, "manifest.json", json.dumps([{"Config": name, "RepoTags": tags, "Layers": ["layer.tar"]}]).encode())
        _add(t, name, config)
        _add(t, "layer.tar", blob)
    client.images.load(out.getvalue())
    return str(client.images.get(tags[0]).id)


@pytest.fixture
def repo(docker_client: Any, session_id: str) -> Iterator[str]:
    """This test's repositories (`<repo>` and `<repo>-other`): every image in them is removed at the end."""
    name = f"bgtest-hygiene-{session_id}-{os.urandom(3).hex()}"
    yield name
    remove_repositories(docker_client, [name, f"{name}-other"])


def present(client: Any, ids: dict[str, str]) -> set[str]:
    have = {i["Id"] for i in client.api.images()}
    return {k for k, v in ids.items() if v in have}


def test_pruning_keeps_the_releases_images_and_protected_ones_across_a_kill_9_mid_prune(
    docker_client: Any, test_images: dict[str, str], app_name: str, nginx: NginxInstance, tmp_path: Path, session_id: str, repo: str
) -> None:
    ids = {c: build_test_image(docker_client, f"{repo}:{c}", version=c) for c in ("c1", "c2")}
    # Twelve old unused images, and old ones that must stay whatever their age: one a stopped container of no app
    # uses, one another repository names too, one of another repository only. All present before release #1.
    for i in range(1, 13):
        ids[f"o{i:02}"] = load_image(docker_client, [f"{repo}:o{i:02}"], f"2001-01-01T00:{i:02}:00Z")
    ids["used"] = load_image(docker_client, [f"{repo}:used"], "2000-01-01T00:00:00Z")
    ids["shared"] = load_image(docker_client, [f"{repo}:shared", f"{repo}-other:shared"], "2000-01-01T00:00:01Z")
    ids["other"] = load_image(docker_client, [f"{repo}-other:x"], "2000-01-01T00:00:02Z")
    stopped = docker_client.containers.create(f"{repo}:used", labels={"bluegreen.test": session_id})
    w = World(docker_client, app_name, nginx, tmp_path, session_id, keepImages=2, healthCheck={"stableSeconds": 0})
    try:
        # Release #1: every image is first seen in its pass, none is known to be older than it: nothing goes.
        w.set(image=f"{repo}:c1")
        w.once()
        assert present(docker_client, ids) == set(ids)
        doomed = {f"o{i:02}" for i in range(1, 13)}  # not the image of a release, seen before release #2
        kept = set(ids) - doomed

        # Release #2 (a pass that changes something sweeps at once), killed (-9) right after Docker reports its first
        # image removal.
        w.set(image=f"{repo}:c2", activeColor="green")
        proc = start_reconcile(w.spec_path, w.state, "--once")
        killed_after: list[str] = []

        def kill_on_first_removal() -> None:
            events = docker_client.events(filters={"type": "image", "event": ["untag", "delete"]}, decode=True,
                                          since=int(time.time()) - 1, until=int(time.time()) + 60)
            for ev in events:
                if ev.get("id") in ids.values():
                    proc.send_signal(signal.SIGKILL)
                    killed_after.append(str(ev.get("id")))
                    return

        t = threading.Thread(target=kill_on_first_removal, daemon=True)
        t.start()
        assert proc.wait(timeout=60) == -signal.SIGKILL
        t.join(timeout=5)
        w.assert_serving("green", "c2")
        after_kill = present(docker_client, ids)
        assert kept <= after_kill, "a kept image was removed"
        assert "o01" not in after_kill and doomed & after_kill, f"not killed mid-prune: {sorted(set(ids) - after_kill)} removed"

        # --plan shows what is left to go (and says changes are pending); nothing is removed by it.
        left = sorted(doomed & after_kill)
        plan = w.run("--plan", "--json")
        assert plan.returncode == 1, plan.explain()
        [shown] = json.loads(plan.stdout)
        assert shown["inSync"] and [p["references"] for p in shown["prune"]] == [[f"{repo}:{n}"] for n in left], shown
        assert [p["imageId"] for p in shown["prune"]] == [ids[n] for n in left]
        assert present(docker_client, ids) == after_kill
        # A cron run that changes nothing sweeps at most every --prune-interval (default 1 h since the last completed
        # sweep, release #1's): it removes nothing yet.
        w.once()
        assert present(docker_client, ids) == after_kill

        # The next sweep (--prune-interval 0: due on every pass) plans again from what is there, finishes, and keeps
        # exactly the same images.
        r = w.once("--prune-interval", "0")
        assert present(docker_client, ids) == kept, r.explain()
        w.assert_serving("green", "c2")
        rids = {line.get("reconcile_id") for line in r.logs()} - {None}
        rows = [h for h in history(w.state, w.app) if h["action"] == "RemoveImage" and h["reconcileId"] in rids]
        assert {h["image"] for h in rows} == {f"{repo}:{n}" for n in left}
        assert all(h["outcome"] == "ok" and h["imageId"] == ids[h["image"].split(":")[-1]] for h in rows), rows
    finally:
        stopped.remove(force=True)


@pytest.mark.parametrize("kind", ["host", "fake"])
def test_remove_image_is_never_forced_and_idempotent(kind: str, docker_client: Any, session_id: str, repo: str) -> None:
    """The contract FakeWorld keeps with the real driver: refused while a container (even stopped) uses it."""
    if kind == "host":
        image = f"{repo}:a"
        image_id = load_image(docker_client, [image], "2001-01-01T00:00:00Z")
        world: Any = DockerDriver()
        user = docker_client.containers.create(image, labels={"bluegreen.test": session_id})
        stop_using = user.remove
    else:
        image = "dialogue:a"
        world = FakeWorld(images={image: FakeImage(created=1.0)})
        image_id = world.image_id_of(image)
        world.create_container(ContainerRequest(name="x-blue", image=image, labels={}, env={}, container_port=8081, host_ip="127.0.0.1", host_port=1))
        world.stop_container("x-blue", 1)

        def stop_using() -> None:
            world.remove_container("x-blue")

    listed = {i.id: i for i in world.list_images()}
    assert listed[image_id].references == (image,) and image_id in world.image_ids_in_use()
    refused = world.remove_image(image_id)
    assert refused is not None and "container" in refused and image_id in {i.id for i in world.list_images()}
    stop_using()
    assert image_id not in world.image_ids_in_use()
    assert world.remove_image(image_id) is None and image_id not in {i.id for i in world.list_images()}
    assert world.remove_image(image_id) is None  # already gone: nothing to do
