"""Accessories on a real host (issue 13): a real Redis (Debian's redis-server in an image FROM scratch) run by
`python -m controller --once` from a spec directory, against a real dockerd (and a real nginx for dependsOn).

Every accessory gets a unique name, volume and network; the module's finalizer removes what the tests made,
containers by the accessory label, volumes and networks by name.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.accessory.reconcile import AccessoryResult, AccessoryRunner
from controller.spec.accessory import Accessory
from controller.store.state import StateStore
from tests.support.controller_run import (
    ROOT,
    Run,
    app_spec,
    run_reconcile,
    served_version,
    start_reconcile,
    subprocess_env,
    write_spec,
)
from tests.support.net import free_port
from tests.support.nginx import NginxInstance, settle_running
from tests.support.redis_image import RedisImageUnavailable, build_redis_image, build_redis_volume_image

CLI = "/usr/bin/redis-cli"


@pytest.fixture(scope="module")
def redis_image(docker_client: Any) -> str:
    try:
        return build_redis_image(docker_client)
    except RedisImageUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture
def acc(docker_client: Any) -> Iterator[str]:
    """A unique accessory name; its containers, volume (<name>-data) and network (<name>-net) are removed after."""
    name = f"acc{uuid.uuid4().hex[:8]}"
    yield name
    for c in docker_client.containers.list(all=True, filters={"label": f"bluegreen.accessory={name}"}):
        c.remove(force=True)
    for c in docker_client.containers.list(all=True, filters={"name": name}):
        if c.name in (name, f"{name}-backup"):
            c.remove(force=True)
    for v in docker_client.volumes.list(filters={"name": name}):
        v.remove(force=True)
    for n in docker_client.networks.list(names=[f"{name}-net"]):
        n.remove()


def accessory_doc(name: str, image: str, port: int, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "image": image,
        "ports": {"6379": port},
        "volumes": {f"{name}-data": "/data"},
        "command": ["/usr/bin/redis-server", "--dir", "/data", "--save", "60", "1"],
        "healthCheck": {"command": [CLI, "ping"], "timeoutSeconds": 10, "intervalSeconds": 0.2},
        "network": f"{name}-net",
        "stopTimeoutSeconds": 5,
    }
    body.update(spec)
    return {"apiVersion": "bluegreen/v1", "kind": "Accessory", "metadata": {"name": name}, "spec": body}


def in_process(state: Path, doc: dict[str, Any]) -> AccessoryResult:
    """One accessory pass in this process: the runner `--once` uses, on the real dockerd (saves a Python start)."""
    from controller.drivers.host import HostWorld

    world = HostWorld()
    try:
        return AccessoryRunner(world, StateStore(state)).reconcile(Accessory.model_validate(doc))
    finally:
        world.close()


def redis(docker_client: Any, name: str, *args: str) -> str:
    c = docker_client.containers.get(name)
    code, out = c.exec_run([CLI, *args])
    assert code == 0, out
    return str(out.decode().strip())


def _inode(docker_client: Any, name: str) -> str:
    code, out = docker_client.containers.get(name).exec_run(["/bin/busybox", "stat", "-c", "%i", "/data"])
    assert code == 0, out
    return str(out.decode().strip())


def test_recreate_keeps_data_manual_refuses_and_a_killed_one_is_healed(
    docker_client: Any, redis_image: str, acc: str, tmp_path: Path
) -> None:
    specs, state = tmp_path / "specs", tmp_path / "state"
    specs.mkdir()
    port = free_port()
    write_spec(specs / "redis.yaml", accessory_doc(acc, redis_image, port))
    r = run_reconcile(specs, state, "--once")
    assert r.returncode == 0, r.explain()
    c = docker_client.containers.get(acc)
    assert c.labels["bluegreen.accessory"] == acc and c.status == "running"
    # The network alias: an app container on the network reaches the accessory by its name.
    assert acc in c.attrs["NetworkSettings"]["Networks"][f"{acc}-net"]["Aliases"]
    assert c.attrs["HostConfig"]["PortBindings"]["6379/tcp"][0] == {"HostIp": "127.0.0.1", "HostPort": str(port)}
    redis(docker_client, acc, "SET", "k", "before")
    redis(docker_client, acc, "SAVE")
    first = c.id

    # update: manual (the default) and a new configuration: reported, nothing touched.
    changed = ["/usr/bin/redis-server", "--dir", "/data", "--save", "60", "1", "--maxmemory", "64mb"]
    write_spec(specs / "redis.yaml", accessory_doc(acc, redis_image, port, command=changed))
    r = run_reconcile(specs, state, "--once")
    assert r.returncode == 1, r.explain()
    assert f"{acc}: AccessoryOutdated: {acc} is out of date (command)" in r.stderr
    assert docker_client.containers.get(acc).id == first

    # update: recreate with a backup: the backup runs (volumes mounted), then a new container keeps the data.
    backup = {"command": ["/bin/busybox", "cp", "/data/dump.rdb", "/data/backup.rdb"], "timeoutSeconds": 20}
    res = in_process(state, accessory_doc(acc, redis_image, port, command=changed, update="recreate", backup=backup))
    assert res.converged, res
    c = docker_client.containers.get(acc)
    assert c.id != first and "--maxmemory" in c.attrs["Config"]["Cmd"]
    assert redis(docker_client, acc, "GET", "k") == "before"
    code, _ = c.exec_run(["/bin/busybox", "test", "-s", "/data/backup.rdb"])
    assert code == 0, "the backup did not write into the volume"
    assert not docker_client.containers.list(all=True, filters={"name": f"{acc}-backup"})

    # A failed backup recreates nothing: the old container keeps running.
    bad = {"command": ["/bin/busybox", "cp", "/data/no-such-file", "/data/backup.rdb"], "timeoutSeconds": 20}
    res = in_process(state, accessory_doc(acc, redis_image, port, command=changed, update="recreate", backup=bad, env={"X": "1"}))
    assert res.result == "error" and res.error is not None and "backup failed (exit 1" in res.error, res
    assert docker_client.containers.get(acc).id == c.id and docker_client.containers.get(acc).status == "running"

    # Killed: the next pass starts it again, data intact.
    write_spec(specs / "redis.yaml", accessory_doc(acc, redis_image, port, command=changed, update="recreate", backup=backup))
    redis(docker_client, acc, "SET", "k", "after")
    redis(docker_client, acc, "SAVE")
    c.kill()
    r = run_reconcile(specs, state, "--once")
    assert r.returncode == 0 and f"{acc}: converged (accessory, 2 actions)" in r.stdout, r.explain()
    c = docker_client.containers.get(acc)
    assert c.status == "running"
    assert redis(docker_client, acc, "GET", "k") == "after"

    # A container with the accessory's name the controller did not create: blocker, never touched.
    c.remove(force=True)
    stranger = docker_client.containers.create(redis_image, name=acc, labels={"bluegreen.test": "stranger"})
    res = in_process(state, accessory_doc(acc, redis_image, port, command=changed, update="recreate", backup=backup))
    assert res.result == "blocked" and res.plan is not None and res.plan.blockers[0].reason == "AccessoryNotOurs", res
    assert docker_client.containers.get(acc).id == stranger.id and docker_client.containers.get(acc).status == "created"


def test_kill_9_during_a_recreate_the_next_pass_completes_and_the_volume_is_kept(
    docker_client: Any, redis_image: str, acc: str, tmp_path: Path
) -> None:
    specs, state = tmp_path / "specs", tmp_path / "state"
    specs.mkdir()
    port = free_port()
    assert in_process(state, accessory_doc(acc, redis_image, port)).converged
    redis(docker_client, acc, "SET", "k", "kept")
    redis(docker_client, acc, "SAVE")
    volume_id = _inode(docker_client, acc)  # (Docker's CreatedAt of a local volume is its directory's mtime)
    # A backup that takes a while: the run is killed while it runs (the recreate has begun).
    slow = {"command": ["/bin/busybox", "sh", "-c", "sleep 30; cp /data/dump.rdb /data/backup.rdb"], "timeoutSeconds": 60}
    write_spec(specs / "redis.yaml", accessory_doc(acc, redis_image, port, update="recreate", backup=slow, env={"V": "2"}))
    proc = start_reconcile(specs, state, "--once")
    try:
        deadline = time.monotonic() + 20
        while not docker_client.containers.list(filters={"name": f"{acc}-backup", "status": "running"}):
            assert time.monotonic() < deadline and proc.poll() is None, "the backup never started"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert docker_client.containers.get(acc).status == "running"  # the old one, untouched so far
    quick = {"command": ["/bin/busybox", "cp", "/data/dump.rdb", "/data/backup.rdb"], "timeoutSeconds": 20}
    res = in_process(state, accessory_doc(acc, redis_image, port, update="recreate", backup=quick, env={"V": "2"}))
    assert res.converged, res
    assert redis(docker_client, acc, "GET", "k") == "kept"
    assert _inode(docker_client, acc) == volume_id  # the same volume directory, not a new one
    assert not docker_client.containers.list(all=True, filters={"name": f"{acc}-backup"})  # the leftover one-off is gone


def test_the_anonymous_volume_of_an_image_volume_survives_a_recreate_and_plan_names_it(
    docker_client: Any, redis_image: str, acc: str, tmp_path: Path
) -> None:
    """An image that declares VOLUME /data and an accessory without spec.volumes (issue 19 #7): Docker gives
    the container an anonymous volume; a recreate mounts that same volume again at /data, the data survives,
    and --plan names the volume instead of saying that recreating loses no data."""
    image = build_redis_volume_image(docker_client)
    specs, state = tmp_path / "specs", tmp_path / "state"
    specs.mkdir()
    port = free_port()
    doc = accessory_doc(acc, image, port, volumes={}, update="recreate")
    anon: list[str] = []
    try:
        write_spec(specs / "redis.yaml", doc)
        r = run_reconcile(specs, state, "--once")
        assert r.returncode == 0, r.explain()
        c = docker_client.containers.get(acc)
        anon = [m["Name"] for m in c.attrs["Mounts"] if m["Destination"] == "/data" and m["Type"] == "volume"]
        assert len(anon) == 1 and len(anon[0]) == 64, c.attrs["Mounts"]  # anonymous: Docker named it
        redis(docker_client, acc, "SET", "k", "in-the-image-volume")
        redis(docker_client, acc, "SAVE")
        first, inode = c.id, _inode(docker_client, acc)

        changed = [*doc["spec"]["command"], "--maxmemory", "64mb"]
        write_spec(specs / "redis.yaml", accessory_doc(acc, image, port, volumes={}, update="recreate", command=changed))
        r = run_reconcile(specs, state, "--plan")
        assert "loses no data" not in r.stdout, r.explain()
        assert f"note: warning: update: recreate with anonymous volume {anon[0][:12]} at /data and no backup command" in r.stdout, r.explain()
        assert f"CreateAccessory({acc}): recreate from {image}, with anonymous volumes {anon[0][:12]} at /data" in r.stdout, r.explain()

        r = run_reconcile(specs, state, "--once")
        assert r.returncode == 0, r.explain()
        c = docker_client.containers.get(acc)
        assert c.id != first and "--maxmemory" in c.attrs["Config"]["Cmd"]
        assert [m["Name"] for m in c.attrs["Mounts"] if m["Destination"] == "/data"] == anon  # the same volume
        assert _inode(docker_client, acc) == inode
        assert redis(docker_client, acc, "GET", "k") == "in-the-image-volume"
        assert not docker_client.containers.list(all=True, filters={"name": f"{acc}-retired"})
    finally:
        for c in docker_client.containers.list(all=True, filters={"label": f"bluegreen.accessory={acc}"}):
            c.remove(force=True)
        for v in anon:
            docker_client.volumes.get(v).remove(force=True)


def test_a_dependency_down_keeps_a_new_color_from_starting_and_the_live_one_serving(
    docker_client: Any,
    redis_image: str,
    acc: str,
    tmp_path: Path,
    nginx: NginxInstance,
    app_name: str,
    test_images: dict[str, str],
    session_id: str,
) -> None:
    specs, state = tmp_path / "specs", tmp_path / "state"
    specs.mkdir()
    # Healthy while /data/ready exists: the test makes the accessory unhealthy without stopping it.
    hc = {"command": ["/bin/busybox", "test", "-f", "/data/ready"], "timeoutSeconds": 1, "intervalSeconds": 0.2}
    write_spec(specs / "redis.yaml", accessory_doc(acc, redis_image, free_port(), healthCheck=hc))
    app = app_spec(app_name, nginx, tmp_path, test_images["v1"], "blue", session_id=session_id, dependsOn=[acc], network=f"{acc}-net")
    # A network neither existing nor declared by an accessory: invalid input, one line, nothing done.
    write_spec(specs / "app.yaml", {**app, "spec": {**app["spec"], "network": f"{acc}-nowhere"}})
    r = run_reconcile(specs, state, "--once")
    assert r.returncode == 2, r.explain()
    assert f"reconcile: {app_name}: spec.network: '{acc}-nowhere' is neither an existing Docker network nor declared by an accessory" in r.stderr
    assert not docker_client.containers.list(all=True, filters={"label": f"bluegreen.app={app_name}"})

    write_spec(specs / "app.yaml", app)
    r = run_reconcile(specs, state, "--once")
    assert r.returncode == 1 and f"{app_name}: DependencyNotReady" in r.stderr, r.explain()
    assert not docker_client.containers.list(all=True, filters={"label": f"bluegreen.app={app_name}"})

    docker_client.containers.get(acc).exec_run(["/bin/busybox", "touch", "/data/ready"])
    r = run_reconcile(specs, state, "--once")
    assert r.returncode == 0, r.explain()
    assert served_version(nginx, app_name) == "v1"
    blue = docker_client.containers.get(f"{app_name}-blue")
    assert f"{acc}-net" in blue.attrs["NetworkSettings"]["Networks"]

    docker_client.containers.get(acc).exec_run(["/bin/busybox", "rm", "/data/ready"])
    write_spec(specs / "app.yaml", {**app, "spec": {**app["spec"], "image": test_images["v2"], "activeColor": "green"}})
    r = run_reconcile(specs, state, "--once")
    assert r.returncode == 1 and "DependencyNotReady" in r.stderr, r.explain()
    assert not docker_client.containers.list(all=True, filters={"name": f"{app_name}-green"})
    assert served_version(nginx, app_name) == "v1"
    assert docker_client.containers.get(f"{app_name}-blue").status == "running"


def test_deploy_apply_checks_dependson_against_the_accessories_beside_the_spec(
    docker_client: Any,
    redis_image: str,
    acc: str,
    tmp_path: Path,
    nginx: NginxInstance,
    app_name: str,
    test_images: dict[str, str],
    session_id: str,
) -> None:
    """`deploy --apply` converges like `--once` on the spec's directory: the accessory the app depends on is there
    (it used to read the one file, and refuse dependsOn as naming "no accessory in this directory"), its gate holds,
    and another app's broken file in the directory is not this run's problem."""
    specs, state = tmp_path / "specs", tmp_path / "state"
    specs.mkdir()
    hc = {"command": ["/bin/busybox", "test", "-f", "/data/ready"], "timeoutSeconds": 1, "intervalSeconds": 0.2}
    write_spec(specs / "redis.yaml", accessory_doc(acc, redis_image, free_port(), healthCheck=hc))
    app = app_spec(app_name, nginx, tmp_path, test_images["v1"], "blue", session_id=session_id, dependsOn=[acc], network=f"{acc}-net")
    spec = write_spec(specs / "app.yaml", app)
    (specs / "other.yaml").write_text("apiVersion: bluegreen/v1\nkind: BlueGreenApp\nmetadata: {name: other}\nspec: {image: [}\n")
    run_reconcile(specs, state, "--once")  # creates the accessory; the app waits for it (the other file: exit 2)
    docker_client.containers.get(acc).exec_run(["/bin/busybox", "touch", "/data/ready"])
    r = run_reconcile(specs, state, "--once")
    assert served_version(nginx, app_name) == "v1", r.explain()

    def deploy(image: str) -> Run:
        argv = [sys.executable, "-m", "controller", "deploy", "--image", image, "--apply", "-f", str(spec), "--state-dir", str(state)]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=subprocess_env(None), cwd=str(ROOT), stdin=subprocess.DEVNULL)
        settle_running()
        return Run(p.args, p.returncode, p.stdout, p.stderr)

    docker_client.containers.get(acc).exec_run(["/bin/busybox", "rm", "/data/ready"])
    r = deploy(test_images["v2"])
    assert r.returncode == 1 and f"{app_name}: DependencyNotReady" in r.stderr, r.explain()
    assert "other.yaml" not in r.stderr and "no accessory" not in r.stderr, r.explain()
    assert not docker_client.containers.list(all=True, filters={"name": f"{app_name}-green"})
    assert served_version(nginx, app_name) == "v1"

    # The accessory ready again, the same deploy from the spec as it was: converged through the gate.
    docker_client.containers.get(acc).exec_run(["/bin/busybox", "touch", "/data/ready"])
    write_spec(spec, app)
    r = deploy(test_images["v2"])
    assert r.returncode == 0, r.explain()
    assert served_version(nginx, app_name) == "v2"


def test_watch_heals_a_killed_accessory_on_its_docker_event(docker_client: Any, redis_image: str, acc: str, tmp_path: Path) -> None:
    specs, state, log = tmp_path / "specs", tmp_path / "state", tmp_path / "watch.log"
    specs.mkdir()
    # restartPolicy "no": Docker does not restart the killed container, only the controller can.
    write_spec(specs / "redis.yaml", accessory_doc(acc, redis_image, free_port(), restartPolicy="no"))
    # A resync far longer than the test: only the Docker event can bring the pass that heals it.
    proc = start_reconcile(specs, state, "--watch", "--resync", "600", "--log-level", "debug", stderr_path=log)
    try:
        first = _wait_running(docker_client, acc, proc, started_after=None)
        redis(docker_client, acc, "SET", "k", "v")
        redis(docker_client, acc, "SAVE")  # on the volume before the SIGKILL
        healed_before = len(_history(state, acc, "StartAccessory"))
        docker_client.containers.get(acc).kill()
        _wait_running(docker_client, acc, proc, started_after=first)
        assert redis(docker_client, acc, "GET", "k") == "v"
        assert len(_history(state, acc, "StartAccessory")) == healed_before + 1  # the controller started it again
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    assert proc.returncode == 0
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    # The pass that healed it was asked for by the Docker event, on the manager's one event stream.
    passes = [e for e in events if e["event"] == "watch.pass" and e.get("accessory") == acc]
    assert any("docker" in e["triggers"] for e in passes), passes
    assert [e["event"] for e in events if e["event"].startswith("docker.events")] == ["docker.events_connected"]


def _history(state: Path, name: str, action: str) -> list[dict[str, Any]]:
    path = state / "history.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [r for r in rows if r.get("app") == name and r.get("action") == action and r.get("outcome") == "ok"]


def _wait_running(docker_client: Any, name: str, proc: Any, started_after: str | None, timeout: float = 20.0) -> str:
    """The container's StartedAt once it runs (and, after a kill, was started again); bounded in time."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, "the watch process ended"
        try:
            c = docker_client.containers.get(name)
            started = str(c.attrs["State"]["StartedAt"])
            if c.status == "running" and started != started_after:
                return started
        except Exception:  # not created yet (docker.errors.NotFound)
            pass
        assert time.monotonic() < deadline, f"{name} not running (again) within {timeout:g}s"
        time.sleep(0.2)
