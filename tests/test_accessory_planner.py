"""The accessory planner, its runner on the in-memory world, the dependsOn gate and spec-directory input (issue 13).

Pure and in-memory (no Docker): the real-host behaviour is in tests/test_real_accessories.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.accessory.plan import AccessoryObserved, plan_accessory
from controller.accessory.reconcile import AccessoryRunner
from controller.app.rules.depends_on import depends_on
from controller.spec.accessory import Accessory, json_schema
from controller.spec.app import SsmSecrets
from controller.spec.directory import select
from controller.store.state import StateStore
from controller.world.actions import CreateContainer, StartContainer, SwitchRoute, WaitHealthy, WriteMarker
from controller.world.facts import AccessoryFact
from controller.world.fake import FakeImage, FakeWorld
from controller.world.protocol import AccessoryRequest
from controller.world.secrets import SecretRef

ROOT = Path(__file__).resolve().parent.parent


def accessory(name: str = "redis", **spec: Any) -> Accessory:
    body: dict[str, Any] = {
        "image": "redis:7.2",
        "ports": {"6379": 16379},
        "volumes": {f"{name}-data": "/data"},
        "healthCheck": {"command": ["redis-cli", "ping"], "timeoutSeconds": 2, "intervalSeconds": 0.5},
        "network": "dialogue",
    }
    body.update(spec)
    return Accessory.model_validate({"apiVersion": "bluegreen/v1", "kind": "Accessory", "metadata": {"name": name}, "spec": body})


PING = ("redis-cli", "ping")


def fake_world() -> FakeWorld:
    """An in-memory host with the images these tests name: `redis-cli ping` answers PONG, a backup succeeds."""
    execs: dict[tuple[str, ...], tuple[int | None, str]] = {PING: (0, "PONG"), ("redis-cli", "save"): (0, "OK")}
    return FakeWorld(images={img: FakeImage(execs=dict(execs)) for img in ("redis:7.2", "redis:7.4", "mongo:7.0")})


def runner(world: FakeWorld, tmp_path: Path) -> AccessoryRunner:
    return AccessoryRunner(world, StateStore(tmp_path / "state"))


def test_missing_creates_network_volume_container_and_waits_then_in_sync(tmp_path: Path) -> None:
    w = fake_world()
    a = accessory()
    r = runner(w, tmp_path).reconcile(a)
    assert r.converged, r
    assert w.mutations == ["create network dialogue", "create volume redis-data", "create redis"]
    req = w.containers["redis"].request
    assert isinstance(req, AccessoryRequest) and req.aliases == ("redis",) and req.ports == {6379: 16379} and req.host_ip == "127.0.0.1"
    assert plan_accessory(a, runner(w, tmp_path).observe(a)).converged
    history = [json.loads(line) for line in (tmp_path / "state" / "history.jsonl").read_text().splitlines()]
    assert [h["action"] for h in history] == ["EnsureNetwork", "EnsureVolume", "CreateAccessory", "WaitAccessoryHealthy"]
    assert all(h["kind"] == "Accessory" and h["outcome"] == "ok" for h in history)
    status = json.loads((tmp_path / "state" / "apps" / "redis" / "status.json").read_text())
    assert status["kind"] == "Accessory" and status["result"] == "converged"
    assert [(c["type"], c["status"]) for c in status["conditions"]] == [("Ready", True), ("Degraded", False)]


def test_outdated_manual_blocks_and_touches_nothing(tmp_path: Path) -> None:
    w = fake_world()
    runner(w, tmp_path).reconcile(accessory())
    w.mutations.clear()
    r = runner(w, tmp_path).reconcile(accessory(image="redis:7.4"))
    assert r.result == "blocked" and r.plan is not None
    (b,) = r.plan.blockers
    assert b.reason == "AccessoryOutdated" and "image redis:7.2 -> redis:7.4" in b.message and "update: recreate" in b.message
    assert w.mutations == []
    status = json.loads((tmp_path / "state" / "apps" / "redis" / "status.json").read_text())
    assert status["conditions"][1] == {"type": "Degraded", "status": True, "reason": "AccessoryOutdated", "message": b.message}


def test_outdated_recreate_backs_up_first_and_never_removes_a_volume(tmp_path: Path) -> None:
    w = fake_world()
    runner(w, tmp_path).reconcile(accessory())
    w.mutations.clear()
    new = accessory(image="redis:7.4", update="recreate", backup={"command": ["redis-cli", "save"]})
    r = runner(w, tmp_path).reconcile(new)
    assert r.converged, r
    assert w.mutations == ["oneoff redis-backup", "stop redis", "rename redis redis-retired", "create redis", "remove redis-retired"]
    assert w.oneoffs[0].volumes == {"redis-data": "/data"} and w.oneoffs[0].image == "redis:7.4"
    assert "redis-data" in w.volumes


def test_a_failed_backup_stops_the_recreate(tmp_path: Path) -> None:
    w = fake_world()
    runner(w, tmp_path).reconcile(accessory())
    w.mutations.clear()
    w.images["redis:7.2"].execs[("x",)] = (3, "disk full")
    r = runner(w, tmp_path).reconcile(accessory(env={"A": "1"}, update="recreate", backup={"command": ["x"]}))
    assert r.result == "error" and r.error is not None and "backup failed (exit 3: disk full)" in r.error
    assert w.mutations == ["oneoff redis-backup"] and w.containers["redis"].state == "running"


@pytest.mark.parametrize("crash_after", ["stop", "rename", "create"])
def test_a_recreate_cut_short_is_completed_by_the_next_pass(tmp_path: Path, crash_after: str) -> None:
    w = fake_world()
    for img in ("redis:7.2", "redis:7.4"):
        w.images[img].volumes = ("/cache", "/data")  # /data: spec.volumes; /cache: anonymous
    runner(w, tmp_path).reconcile(accessory())
    (anon,) = [v for v, path in w.containers["redis"].mounts.items() if path == "/cache"]
    new = accessory(image="redis:7.4", update="recreate")
    # The world as a kill -9 right after that step leaves it.
    w.stop_container("redis", 1)
    if crash_after in ("rename", "create"):
        w.rename_container("redis", "redis-retired")
    if crash_after == "create":
        labels = runner(w, tmp_path)._labels(new, new.config_hash(), {})
        w.create_container(replace(_req(w, "redis-retired"), image="redis:7.4", labels=labels, volumes={anon: "/cache", "redis-data": "/data"}))
    w.mutations.clear()
    r = runner(w, tmp_path).reconcile(new)
    assert r.converged, r
    rest = {"stop": ["rename redis redis-retired", "create redis", "remove redis-retired"], "rename": ["create redis", "remove redis-retired"]}
    assert w.mutations == rest.get(crash_after, ["remove redis-retired"])
    assert w.containers["redis"].mounts == {"redis-data": "/data", anon: "/cache"} and set(w.containers) == {"redis"}
    assert {"redis-data", anon} <= set(w.volumes)


def _req(w: FakeWorld, name: str) -> AccessoryRequest:
    req = w.containers[name].request
    assert isinstance(req, AccessoryRequest)
    return req


def test_an_image_volume_is_kept_across_a_recreate_and_the_backup_sees_it(tmp_path: Path) -> None:
    """No spec.volumes, an image that declares VOLUME /data (redis, mongo, qdrant do): the anonymous volume
    Docker made is mounted again at /data by the recreated container, and by the backup before it."""
    w = fake_world()
    for img in ("redis:7.2", "redis:7.4"):
        w.images[img].volumes = ("/data",)
    runner(w, tmp_path).reconcile(accessory(volumes={}))
    (anon,) = w.containers["redis"].mounts
    new = accessory(image="redis:7.4", volumes={}, update="recreate", backup={"command": ["redis-cli", "save"]})
    p = runner(w, tmp_path).plan(new)
    create = next(s for s in p.actions if s.verb == "CreateAccessory")
    assert create.keep == ((anon, "/data"),) and f"with anonymous volumes {anon[:12]} at /data" in create.reason
    assert runner(w, tmp_path).reconcile(new).converged
    assert w.containers["redis"].mounts == {anon: "/data"} and w.oneoffs[0].volumes == {anon: "/data"}
    assert set(w.volumes) == {anon}  # no second, empty anonymous volume


def test_a_retired_container_whose_volumes_the_current_one_lacks_is_kept(tmp_path: Path) -> None:
    w = fake_world()
    w.images["redis:7.2"].volumes = ("/data",)
    runner(w, tmp_path).reconcile(accessory(volumes={}))
    w.stop_container("redis", 1)
    w.rename_container("redis", "redis-retired")
    w.images["redis:7.2"].volumes = ()
    w.create_container(replace(_req(w, "redis-retired"), volumes={}))  # by hand
    w.mutations.clear()
    r = runner(w, tmp_path).reconcile(accessory(volumes={}))
    assert r.result == "blocked" and r.plan is not None and r.plan.blockers[0].reason == "AccessoryRetiredKept", r
    assert "docker rm redis-retired, without -v" in r.plan.blockers[0].message and w.mutations == []


def test_stopped_is_started_and_a_stranger_is_never_touched(tmp_path: Path) -> None:
    w = fake_world()
    runner(w, tmp_path).reconcile(accessory())
    w.kill("redis")
    w.mutations.clear()
    assert runner(w, tmp_path).reconcile(accessory()).converged
    assert w.mutations == ["start redis"]
    w.containers.clear()
    w.add_stranger("redis")
    w.mutations.clear()
    r = runner(w, tmp_path).reconcile(accessory())
    assert r.result == "blocked" and r.plan is not None and r.plan.blockers[0].reason == "AccessoryNotOurs"
    assert w.mutations == []


def test_a_new_accessory_that_never_gets_healthy_fails_its_wait(tmp_path: Path) -> None:
    w = fake_world()
    w.images["redis:7.2"].execs[PING] = (1, "")
    r = runner(w, tmp_path).reconcile(accessory())
    assert r.result == "degraded" and r.error is not None and "redis: not healthy after 2s: exit 1" in r.error
    assert w.clock == 1_000_000.0 + 2.0  # waited the check's timeoutSeconds on the world's clock, polling each interval


class StubSsm:
    """A SecretSource (the interface drivers/ssm.SsmSource implements) with one rotatable parameter."""

    def __init__(self) -> None:
        self.version = 1
        self.value_calls = 0

    def versions(self, cfg: SsmSecrets) -> list[SecretRef]:
        return [SecretRef("MONGO_INITDB_ROOT_PASSWORD", f"{cfg.path}password", self.version, "SecureString")]

    def values(self, cfg: SsmSecrets, refs: list[SecretRef]) -> dict[str, str]:
        self.value_calls += 1
        return {r.env: f"s3cret-v{r.version}" for r in refs}


def test_ssm_secrets_reach_the_container_and_a_rotation_makes_it_outdated(tmp_path: Path) -> None:
    w = fake_world()
    ssm = StubSsm()
    run = AccessoryRunner(w, StateStore(tmp_path / "state"), secrets=ssm)
    mongo = accessory("mongo", image="mongo:7.0", ports={}, secrets={"ssm": {"path": "/dialogue/prod/mongo/"}})
    assert run.reconcile(mongo).converged
    req = w.containers["mongo"].request
    assert req is not None and req.env == {"MONGO_INITDB_ROOT_PASSWORD": "s3cret-v1"}
    assert run.reconcile(mongo).converged and ssm.value_calls == 1  # values are read only for a create
    ssm.version = 2
    r = run.reconcile(mongo)
    assert r.result == "blocked" and r.plan is not None and "(secrets)" in r.plan.blockers[0].message
    state = (tmp_path / "state" / "history.jsonl").read_text() + (tmp_path / "state" / "apps" / "mongo" / "status.json").read_text()
    assert "s3cret" not in state


def test_unhealthy_is_reported_and_not_ready_for_dependants(tmp_path: Path) -> None:
    w = fake_world()
    run = runner(w, tmp_path)
    run.reconcile_all([accessory()])
    assert run.not_ready(["redis"]) == {}
    w.containers["redis"].broken = True
    assert run.not_ready(["redis"]) == {"redis": "unhealthy: exit 1"}
    obs = run.observe(accessory())
    assert plan_accessory(accessory(), obs).blockers[0].reason == "AccessoryUnhealthy"


def test_an_app_network_must_exist_or_be_declared(tmp_path: Path) -> None:
    from tests.factories import make_app

    w = fake_world()
    w.networks["existing"] = {}
    run = runner(w, tmp_path)
    run.accessories = {"redis": accessory()}  # declares "dialogue" (created by its pass)
    apps = [make_app(name=n, network=net) for n, net in (("a", "dialogue"), ("b", "existing"), ("c", "nowhere"), ("d", None))]
    assert run.network_problems(apps) == {"c": "spec.network: 'nowhere' is neither an existing Docker network nor declared by an accessory"}


def test_depends_on_holds_a_new_color_and_never_the_live_one() -> None:
    deploy = (CreateContainer("green", "new"), WaitHealthy("green", "w"), SwitchRoute("green", "s"), WriteMarker("green", "m"))
    held = depends_on(deploy, "blue", {"redis": "exited"})
    assert held is not None and held.actions == ()
    assert held.blocker.reason == "DependencyNotReady" and "blue keeps serving" in held.blocker.message
    assert depends_on(deploy, "blue", {}) is None
    heal = (StartContainer("blue", "killed"), WaitHealthy("blue", "w"))
    assert depends_on(heal, "blue", {"redis": "exited"}) is None
    mixed = (StartContainer("blue", "killed"), CreateContainer("green", "new"), SwitchRoute("green", "s"))
    held = depends_on(mixed, "blue", {"redis": "exited"})
    assert held is not None and held.actions == (StartContainer("blue", "killed"),)


# Spec input -----------------------------------------------------------------------------------------------
def _doc(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "bluegreen/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


APP = {"image": "web:1", "activeColor": "blue", "ports": {"blue": 18081, "green": 18082}}
REDIS = {"image": "redis:7.2", "ports": {"6379": 16379}, "volumes": {"redis-data": "/data"}}

BAD: dict[str, tuple[list[dict[str, Any]], str]] = {
    "two accessories on one host port": (
        [_doc("Accessory", "redis", REDIS), _doc("Accessory", "mongo", {"image": "mongo:7", "ports": {"27017": 16379}})],
        "accessory mongo and accessory redis both use host port 127.0.0.1:16379",
    ),
    "an accessory on an app's port": (
        [_doc("BlueGreenApp", "web", APP), _doc("Accessory", "redis", {**REDIS, "ports": {"6379": 18082}})],
        "accessory redis and app web both use host port 127.0.0.1:18082",
    ),
    "one volume for two accessories": (
        [_doc("Accessory", "redis", REDIS), _doc("Accessory", "cache", {"image": "redis:7.2", "volumes": {"redis-data": "/data"}})],
        "accessory cache and accessory redis both use volume redis-data",
    ),
    "invalid volume name": ([_doc("Accessory", "redis", {**REDIS, "volumes": {"bad/name": "/data"}})], "spec.volumes: 'bad/name' is not a Docker volume name"),
    "a host path as a volume (a bind mount)": ([_doc("Accessory", "redis", {**REDIS, "volumes": {"/etc": "/data"}})], "'/etc' is not a Docker volume name"),
    "overlapping volume paths": (
        [_doc("Accessory", "redis", {**REDIS, "volumes": {"a1": "/data", "b1": "/data/x"}})],
        "volume paths /data and /data/x overlap",
    ),
    "healthCheck with two kinds": (
        [_doc("Accessory", "redis", {**REDIS, "healthCheck": {"tcp": 6379, "command": ["redis-cli", "ping"]}})],
        "exactly one of command, tcp, http is required (got command, tcp)",
    ),
    "dependsOn naming an app": (
        [_doc("BlueGreenApp", "web", {**APP, "dependsOn": ["api"]}), _doc("BlueGreenApp", "api", {**APP, "ports": {"blue": 18091, "green": 18092}})],
        "spec.dependsOn: 'api' is an app; only accessories can be depended on",
    ),
    "dependsOn naming nothing": ([_doc("BlueGreenApp", "web", {**APP, "dependsOn": ["redis"]})], "spec.dependsOn: 'redis' is no accessory in this directory"),
    "an accessory named like a color": (
        [_doc("BlueGreenApp", "web", APP), _doc("Accessory", "web-blue", {"image": "redis:7.2"})],
        "accessory web-blue and app web (container web-blue) both use name web-blue",
    ),
    "backup without recreate": ([_doc("Accessory", "redis", {**REDIS, "backup": {"command": ["x"]}})], "backup runs only before a recreate"),
    "a public port without the opt-in": ([_doc("Accessory", "redis", {**REDIS, "bindAddress": "0.0.0.0"})], "is not a loopback address"),
}


def _write(d: Path, docs: list[dict[str, Any]], prefix: str = "") -> None:
    d.mkdir(parents=True, exist_ok=True)
    for i, doc in enumerate(docs):
        (d / f"{prefix}{i}-{doc['metadata']['name']}.yaml").write_text(yaml.safe_dump(doc))
        (d / f"{prefix}{i}-{doc['metadata']['name']}.yaml").chmod(0o644)


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_problem_naming_it(tmp_path: Path, case: str) -> None:
    docs, expected = BAD[case]
    _write(tmp_path, docs)
    sel = select(tmp_path)
    assert sel.problems, f"{case}: accepted"
    assert any(expected in p.message for p in sel.problems), [p.message for p in sel.problems]
    assert all("\n" not in p.message for p in sel.problems)


def test_cli_bad_input_exits_2_one_line_each_and_changes_nothing(tmp_path: Path) -> None:
    specs, state = tmp_path / "specs", tmp_path / "state"
    # Only refused documents, and nothing that would need Docker: the run stops before touching anything.
    _write(specs, [_doc("Accessory", "redis", {**REDIS, "healthCheck": {"tcp": 6379, "http": {"port": 6379}}})], "a")
    _write(specs, [_doc("Accessory", "cache", {"image": "redis:7.2", "volumes": {"x": "/data"}})], "b")
    p = subprocess.run(
        [sys.executable, "-m", "controller", "--once", "-f", str(specs), "--state-dir", str(state)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 2, lines  # one per refused file
    assert "healthCheck: exactly one of command, tcp, http is required (got tcp, http)" in lines[0]
    assert "'x' is not a Docker volume name" in lines[1]
    assert not (state / "history.jsonl").exists()


def test_shipped_accessory_schema_is_current_and_examples_validate() -> None:
    shipped = json.loads((ROOT / "controller" / "schema" / "accessory.schema.json").read_text())
    assert shipped == json_schema(), "regenerate: python -c 'from controller.spec.accessory import json_schema' (see docs/spec.md)"
    from controller.spec.app import BlueGreenApp

    examples = sorted((ROOT / "specs" / "examples" / "host").glob("*.yaml"))
    kinds = {}
    for f in examples:
        doc = yaml.safe_load(f.read_text())
        kinds[doc["metadata"]["name"]] = doc["kind"]
        # The models the shipped schemas are generated from (the schema file equals json_schema(), checked above).
        (Accessory if doc["kind"] == "Accessory" else BlueGreenApp).model_validate(doc)
    assert kinds == {"dialogue": "BlueGreenApp", "mongo": "Accessory", "redis": "Accessory", "qdrant": "Accessory"}
    sel = select(ROOT / "specs" / "examples" / "host")
    assert not sel.problems or all("command not found" in p.message for p in sel.problems), [p.message for p in sel.problems]
    assert sorted(a.name for a in sel.accessories) == ["mongo", "qdrant", "redis"]


def test_accessory_fact_labels_parse() -> None:
    f = AccessoryFact("redis", "id", "redis:7.2", {"bluegreen.accessory.fields": "image=ab,env=cd,junk"}, "running")
    assert f.fields() == {"image": "ab", "env": "cd"}
    assert not f.ours("redis")
    assert AccessoryObserved("redis", f, frozenset(), frozenset(), True).container is f
