"""Deploy, rollback, refused live changes, failed deploys, idempotence and status — real Docker, real nginx.

Every test runs the controller as `python -m controller` in a subprocess and asserts on what really
happened: answers through nginx's public port, Docker's containers, files, exit codes, status and history.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.controller_run import Traffic, World, condition, get, history, read
from tests.support.nginx import NginxInstance

pytestmark = [pytest.mark.docker, pytest.mark.nginx]


@pytest.fixture
def world(docker_client: Any, test_images: dict[str, str], app_name: str, nginx: NginxInstance, tmp_path: Path, session_id: str) -> Callable[..., World]:
    def make(**spec: Any) -> World:
        return World(docker_client, app_name, nginx, tmp_path, session_id, **spec)

    return make


def test_deploy_flips_color_keeps_old_and_labels_containers(world: Callable[..., World]) -> None:
    w = world()
    assert w.served() is None  # the placeholder include: nothing served yet
    first = w.once()
    assert "converged" in first.stdout
    w.assert_serving("blue", "v1")
    blue_id = w.container("blue").id
    assert w.container("green") is None

    w.set(image="bgtest:v2", activeColor="green")
    with Traffic(w.nginx.public_url_for(w.app) + "/actuator/health", max_seconds=60) as traffic:
        w.once()
        # Traffic moved to v2; the first v2 answer came only after the switch, and none failed.
        deadline = time.monotonic() + 5
        while "v2" not in traffic.versions() and time.monotonic() < deadline:
            time.sleep(0.05)
    w.assert_converged_on("green", "v2")
    assert traffic.failures() == [], traffic.failures()[:5]
    assert traffic.versions() <= {"v1", "v2"} and "v1" in traffic.versions()
    seen = [a.version or "" for a in traffic.answers]  # no failures (checked above): every answer has a version
    assert seen == sorted(seen), "traffic went back to v1 after reaching v2"

    green = w.container("green")
    labels = green.labels
    assert labels["bluegreen.app"] == w.app
    assert labels["bluegreen.color"] == "green"
    assert len(labels["bluegreen.revision"]) == 16
    assert labels["bluegreen.managed-by"] == "bluegreen-controller"
    assert green.attrs["Config"]["Image"] == "bgtest:v2"
    # The old color is kept for rollback (standby: keep): same container, still running, still v1.
    blue = w.container("blue")
    assert blue.id == blue_id and blue.status == "running" and blue.labels["bluegreen.color"] == "blue"
    assert blue.labels["bluegreen.revision"] != labels["bluegreen.revision"]
    status = w.status()
    assert condition(status, "RollbackReady")["status"] == "True"
    assert status["lastDeploy"]["outcome"] == "success" and status["lastDeploy"]["color"] == "green"
    assert status["lastDeploy"]["from"] == "blue"


def test_rollback_switches_without_recreating(world: Callable[..., World]) -> None:
    w = world()
    w.once()
    w.set(image="bgtest:v2", activeColor="green")
    w.once()
    ids = {c: w.container(c).id for c in ("blue", "green")}

    w.set(image="bgtest:v1", activeColor="blue")  # the previous image, on the color that still runs it
    r = w.once()
    assert r.elapsed < 10, r.explain()
    w.assert_converged_on("blue", "v1")
    assert {c: w.container(c).id for c in ("blue", "green")} == ids  # nothing recreated
    assert w.container("green").status == "running"  # and the rolled-back-from color is kept
    rows = history(w.state, w.app)
    actions = [h["action"] for h in rows if h["reconcileId"] == rows[-1]["reconcileId"]]
    assert "CreateContainer" not in actions and "RemoveContainer" not in actions
    assert "SwitchRoute" in actions


def test_standby_stop_stops_the_old_color(world: Callable[..., World]) -> None:
    w = world(standby="stop")
    w.once()
    w.set(image="bgtest:v2", activeColor="green")
    w.once()
    w.assert_serving("green", "v2")
    blue = w.container("blue")
    assert blue is not None and blue.status == "exited"  # stopped, not removed
    # Rollback with standby: stop starts the stopped color again, without recreating it.
    w.set(image="bgtest:v1", activeColor="blue")
    w.once()
    w.assert_converged_on("blue", "v1")
    assert w.container("blue").id == blue.id
    assert w.container("green").status == "exited"


def test_change_on_live_color_is_refused_and_touches_nothing(world: Callable[..., World]) -> None:
    w = world(env={"GREETING": "hello"})
    w.once()
    before = w.snapshot()
    log_offset = len(w.nginx.error_log_text())

    w.set(image="bgtest:v2")  # same activeColor: blue
    r = w.once(expect=1)
    assert r.elapsed < 10
    text = r.stdout + "\n".join(r.messages())
    assert "LiveColorOutdated" in text and "activeColor: green" in text, r.explain()

    code, plan = w.plan_json()
    assert code == 1 and plan["inSync"] is False, plan
    assert [b["reason"] for b in plan["blockers"]] == ["LiveColorOutdated"]
    assert "set activeColor: green" in plan["blockers"][0]["message"]
    assert plan["actions"] == []
    text_plan = w.run("--plan")
    assert text_plan.returncode == 1 and "blocked: LiveColorOutdated" in text_plan.stdout and "activeColor: green" in text_plan.stdout

    code, status = w.status_json()
    assert code == 1
    ready = condition(status, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "LiveColorOutdated" and "activeColor: green" in ready["message"]
    assert condition(status, "Degraded")["status"] == "True"
    assert status["observed"]["containers"]["blue"]["upToDate"] is False
    human = w.run("--status")
    assert human.returncode == 1 and "LiveColorOutdated" in human.stdout and "activeColor: green" in human.stdout

    # An env change on the live color is refused the same way.
    w.set(image="bgtest:v1", env={"GREETING": "bonjour"})
    r = w.once(expect=1)
    assert any("LiveColorOutdated" in m and "activeColor: green" in m for m in r.messages()), r.explain()

    # Nothing touched: same container, same files (mtimes), no reload, no history, traffic still on v1.
    after = w.snapshot()
    assert after.containers == before.containers
    assert (after.include, after.include_mtime) == (before.include, before.include_mtime)
    assert (after.marker, after.marker_mtime) == (before.marker, before.marker_mtime)
    assert after.workers == before.workers
    assert "reconfiguring" not in w.nginx.error_log_text()[log_offset:]
    assert after.history_lines == before.history_lines
    assert w.served() == "v1"
    assert w.container("green") is None
    assert get(f"http://127.0.0.1:{w.ports['blue']}/env?GREETING").text == "hello"

    # The remedy named works: flip the color.
    w.set(image="bgtest:v2", activeColor="green")
    w.once()
    w.assert_converged_on("green", "v2")
    assert get(f"http://127.0.0.1:{w.ports['green']}/env?GREETING").text == "bonjour"


def test_failed_deploy_keeps_traffic_remembers_and_backs_off(world: Callable[..., World]) -> None:
    w = world(healthCheck={"timeoutSeconds": 2.5})
    w.once()
    marker_before = read(w.marker)

    w.set(image="bgtest:never", activeColor="green")
    with Traffic(w.nginx.public_url_for(w.app) + "/actuator/health", max_seconds=60) as traffic:
        failed = w.once(expect=1)
        assert failed.elapsed >= 2.5, failed.explain()
        assert "HealthCheckFailed" in failed.stdout + failed.stderr or "did not pass" in failed.stderr
        assert any("did not pass /actuator/health within 2.5s" in m for m in failed.messages()), failed.explain()
        # Traffic and marker where they were.
        assert w.served() == "v1" and w.routed() == "blue"
        assert read(w.marker) == marker_before
        status = w.status()
        degraded = condition(status, "Degraded")
        assert degraded["status"] == "True" and degraded["reason"] == "HealthCheckFailed", status["conditions"]
        assert "did not pass" in degraded["message"]
        assert condition(status, "Ready")["status"] == "False"
        assert status["lastDeploy"]["outcome"] == "failed" and status["lastDeploy"]["image"] == "bgtest:never"
        memory = json.loads((w.state / "apps" / w.app / "memory.json").read_text())
        rev = w.container("green").labels["bluegreen.revision"]
        assert memory["failures"][rev]["count"] == 1 and memory["failures"][rev]["reason"] == "HealthCheckFailed"
        green_id = w.container("green").id

        # The next cron run does not wait the timeout again: it backs off at once, touching nothing.
        rows_before = len(history(w.state))
        backing = w.once(expect=1)
        assert not any(line["event"].startswith("action.") for line in backing.logs()), backing.explain()
        assert len(history(w.state)) == rows_before  # no action taken, so no health wait either
        assert any("BackingOff" in m and "next try in" in m for m in backing.messages()), backing.explain()
        assert w.container("green").id == green_id
        code, plan = w.plan_json()
        assert code == 1 and [b["reason"] for b in plan["blockers"]] == ["BackingOff"]
        assert "at once when the spec changes" in plan["blockers"][0]["message"]

        # A small backoff lets it retry: the whole wait again, and the failure count grows.
        time.sleep(0.3)
        retried = w.once("--backoff-base", "0.2", expect=1)
        assert retried.elapsed >= 2.5, retried.explain()
        memory = json.loads((w.state / "apps" / w.app / "memory.json").read_text())
        assert memory["failures"][rev]["count"] == 2
        assert w.served() == "v1" and read(w.marker) == marker_before

        # A spec change is retried at once, without waiting for the backoff.
        w.set(image="bgtest:v2")
        w.once()
    w.assert_converged_on("green", "v2")
    bad = [a for a in traffic.answers if a.status != 200 or a.version not in ("v1", "v2")]
    assert bad == [], bad[:5]
    assert traffic.versions() == {"v1", "v2"}
    memory = json.loads((w.state / "apps" / w.app / "memory.json").read_text())
    assert memory["failures"] == {}
    assert condition(w.status(), "Degraded")["status"] == "False"
    outcomes = [(h["action"], h["outcome"]) for h in history(w.state, w.app) if h["image"] == "bgtest:never"]
    assert outcomes.count(("WaitHealthy", "failed")) == 2 and ("SwitchRoute", "ok") not in outcomes


def test_idempotent_once_changes_nothing(world: Callable[..., World]) -> None:
    w = world()
    w.once()
    w.set(image="bgtest:v2", activeColor="green")
    w.once()
    before = w.snapshot()
    log_offset = len(w.nginx.error_log_text())
    time.sleep(0.05)  # so that any rewrite would show in the mtimes
    for _ in range(2):
        r = w.once()
        assert "converged" in r.stdout and "actions" not in r.stdout, r.stdout
    after = w.snapshot()
    assert after == before  # same containers, include and marker bytes and mtimes, nginx workers, history
    assert "reconfiguring" not in w.nginx.error_log_text()[log_offset:]
    code, plan = w.plan_json()
    assert code == 0 and plan["inSync"] and plan["diffs"] == []


def test_status_conditions_generation_and_history(world: Callable[..., World]) -> None:
    w = world()
    w.once()
    w.set(image="bgtest:v2", activeColor="green")
    w.once()
    status = w.status()
    conds = {c["type"]: c for c in status["conditions"]}
    assert {"Ready", "Progressing", "Degraded"} <= set(conds)
    for c in conds.values():
        assert set(c) >= {"type", "status", "reason", "message", "lastTransitionTime"}
        assert c["status"] in ("True", "False")
        assert time.strptime(c["lastTransitionTime"], "%Y-%m-%dT%H:%M:%SZ")
    assert conds["Ready"]["status"] == "True" and conds["Ready"]["reason"] == "Converged"
    assert conds["Progressing"]["status"] == "False" and conds["Degraded"]["status"] == "False"
    assert len(status["observedGeneration"]) == 16
    gen_v2 = status["observedGeneration"]
    assert status["observed"]["route"]["color"] == "green" and status["observed"]["marker"]["value"] == "green"
    assert status["observed"]["containers"]["green"]["image"] == "bgtest:v2"

    # --status --json reports the same, rebuilt from observation (exit 0: Ready).
    code, live = w.status_json()
    assert code == 0 and live["observedGeneration"] == gen_v2
    assert live["observed"]["containers"]["blue"]["running"] and live["observed"]["containers"]["blue"]["healthy"]

    # A condition keeps its lastTransitionTime while its status does not change.
    time.sleep(1.1)
    w.once()
    assert {c["type"]: c["lastTransitionTime"] for c in w.status()["conditions"]} == {
        t: c["lastTransitionTime"] for t, c in conds.items()
    }
    # The generation is a hash of the spec: it moves with it.
    w.set(image="bgtest:v1", activeColor="blue")
    w.once()
    status = w.status()
    assert status["observedGeneration"] != gen_v2
    assert condition(status, "Ready")["status"] == "True"

    rows = history(w.state, w.app)
    assert rows, "no history"
    for row in rows:
        assert {"time", "app", "action", "color", "image", "outcome"} <= set(row), row
        assert row["outcome"] in ("ok", "failed") and row["app"] == w.app
        assert time.strptime(row["time"], "%Y-%m-%dT%H:%M:%SZ")
    deploy = [(r["action"], r["color"], r["image"]) for r in rows if r["image"] == "bgtest:v2"]
    assert ("CreateContainer", "green", "bgtest:v2") in deploy
    assert ("WaitHealthy", "green", "bgtest:v2") in deploy
    assert ("SwitchRoute", "green", "bgtest:v2") in deploy
    assert ("WriteMarker", "green", "bgtest:v2") in deploy
    order = [a for a, _, _ in deploy]
    assert order.index("WaitHealthy") < order.index("SwitchRoute") < order.index("WriteMarker")


def test_deploy_of_a_crashing_image_fails_fast_and_keeps_traffic(world: Callable[..., World]) -> None:
    w = world(restartPolicy="no", healthCheck={"timeoutSeconds": 8})
    w.once()
    w.set(image="bgtest:crash", activeColor="green")
    r = w.once(expect=1)
    assert r.elapsed < 8, r.explain()
    w.assert_serving("blue", "v1")
    assert condition(w.status(), "Degraded")["status"] == "True"
