"""Drift (issue 2, items 5 and 6): each perturbation of a converged world, made by hand on the real
Docker and nginx, is found by observation and repaired by one `--once`; a failed `nginx -t` or
reload restores the previous include and leaves traffic where it was.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.controller_run import Traffic, World, condition, history, read
from tests.support.nginx import NginxInstance

pytestmark = [pytest.mark.docker, pytest.mark.nginx]


@pytest.fixture
def world(docker_client: Any, test_images: dict[str, str], app_name: str, nginx: NginxInstance, tmp_path: Path, session_id: str) -> Callable[..., World]:
    def make(**spec: Any) -> World:
        return World(docker_client, app_name, nginx, tmp_path, session_id, **spec)

    return make


def _deployed(w: World) -> None:
    """v1 on blue, then v2 on green: green serves, blue is the standby."""
    w.once()
    w.set(image="bgtest:v2", activeColor="green")
    w.once()
    w.assert_converged_on("green", "v2")


def _hand_route(w: World, color: str) -> None:
    """What an operator editing the include and reloading by hand does."""
    w.nginx.write_upstream(w.app, [f"127.0.0.1:{w.ports[color]}"])
    w.nginx.reload()
    assert w.routed() == color


def test_container_drift_is_repaired(world: Callable[..., World], run_container: Callable[..., Any]) -> None:
    w = world()
    _deployed(w)
    blue_id = w.container("blue").id

    # The live container stopped: started again (same container), traffic back on v2.
    green = w.container("green")
    green.stop(timeout=1)
    assert w.served() is None
    r = w.once()
    assert "StartContainer" in r.stderr and "CreateContainer" not in r.stderr
    w.assert_serving("green", "v2")
    assert w.container("green").id == green.id

    # The live container removed: created again with our labels.
    green.remove(force=True)
    assert w.served() is None
    w.once()
    w.assert_serving("green", "v2")
    green = w.container("green")
    assert green.id != blue_id and green.labels["bluegreen.color"] == "green" and green.labels["bluegreen.app"] == w.app

    # The live container replaced by hand (our name, another image, on the live port, without our labels):
    # not ours, and it serves traffic: never replaced or stopped (issue 10 item 10): exit 1, name it, touch nothing.
    green.remove(force=True)
    hand = run_container("bgtest:v1", name=f"{w.app}-green", host_port=w.ports["green"])
    hand.wait_http()
    before = w.snapshot()
    r = w.once(expect=1)
    assert any("ForeignContainer" in m and f"{w.app}-green" in m for m in r.messages()), r.explain()
    assert w.snapshot() == before and w.served() == "v1"
    code, status = w.status_json()
    assert code == 1 and condition(status, "Ready")["reason"] == "ForeignContainer"
    assert status["observed"]["containers"]["green"]["upToDate"] is False
    # Once it is gone, the next run puts ours back.
    hand.container.remove(force=True)
    w.once()
    w.assert_serving("green", "v2")
    assert "bluegreen.revision" in w.container("green").labels

    # The idle color replaced by hand (our name, another image, no labels): not ours (issue 10 item 10).
    # Traffic is left alone, the run names it (exit 1), the standby is reported as not ready for a rollback,
    # and a rollback onto it is refused: it is neither replaced nor routed to until someone removes it.
    w.container("blue").remove(force=True)
    idle = run_container("bgtest:never", name=f"{w.app}-blue", host_port=w.ports["blue"])
    r = w.once(expect=1)
    assert any("ForeignContainer" in m and f"{w.app}-blue" in m for m in r.messages()), r.explain()
    w.assert_serving("green", "v2")
    code, status = w.status_json()
    rb = condition(status, "RollbackReady")
    assert rb["status"] == "False" and "bgtest:never" in rb["message"], rb
    assert status["observed"]["containers"]["blue"]["upToDate"] is False
    w.set(image="bgtest:v1", activeColor="blue")
    w.once(expect=1)
    w.assert_serving("green", "v2")
    assert w.container("blue").id == idle.id
    idle.container.remove(force=True)
    with Traffic(w.nginx.public_url_for(w.app) + "/actuator/health") as traffic:
        w.once()
    w.assert_converged_on("blue", "v1")
    blue = w.container("blue")
    assert blue.id != idle.id and blue.attrs["Config"]["Image"] == "bgtest:v1" and blue.labels["bluegreen.color"] == "blue"
    assert traffic.failures() == [] and traffic.versions() <= {"v1", "v2"}


def test_include_and_marker_drift_is_repaired(world: Callable[..., World]) -> None:
    w = world()
    _deployed(w)
    include = read(w.include)
    assert include is not None  # written by the deploy

    # The include edited by hand to route to the standby, and nginx reloaded: switched back; the marker
    # named blue (what nginx served) until the switch, and green after it.
    _hand_route(w, "blue")
    assert w.served() == "v1"
    r = w.once()
    w.assert_serving("green", "v2")
    assert read(w.include) == include
    rows = history(w.state, w.app)
    last = [(h["action"], h["color"]) for h in rows if h["reconcileId"] == rows[-1]["reconcileId"]]
    assert last == [("WriteMarker", "blue"), ("SwitchRoute", "green"), ("WriteMarker", "green")], last

    # The include edited without a reload (nginx still serves green): rewritten, tested, reloaded.
    w.include.write_text(include.replace("keepalive 16;", "keepalive 2;") + "# hand edit\n")
    w.once()
    assert read(w.include) == include
    w.assert_serving("green", "v2")

    # The include deleted: written again.
    w.include.unlink()
    w.once()
    assert read(w.include) == include
    w.assert_serving("green", "v2")

    # The include right but not live (nginx still runs a hand-made config routing to blue): reloaded.
    _hand_route(w, "blue")
    w.include.write_text(include)
    mtime = w.include.stat().st_mtime_ns
    w.once()
    w.assert_serving("green", "v2")
    assert w.include.stat().st_mtime_ns == mtime  # the right file is left as it is, only loaded

    # The marker missing, empty, garbage or naming the wrong color: rewritten.
    for bad in (None, "", "purple\n", "\x00\xff garbage", "blue\n", "green blue\n"):
        w.marker.unlink(missing_ok=True)
        if bad is not None:
            w.marker.write_bytes(bad.encode("latin-1"))
        r = w.once()
        assert "WriteMarker" in r.stderr, (bad, r.explain())
        assert read(w.marker) == "green\n", (bad, r.explain())
    w.assert_converged_on("green", "v2")


def test_marker_names_what_nginx_serves_when_a_deploy_fails(world: Callable[..., World]) -> None:
    """The old deploy.sh bug: marker says the new color, the deploy fails. The marker must end on blue."""
    w = world(healthCheck={"timeoutSeconds": 1.5})
    w.once()
    w.set(image="bgtest:never", activeColor="green")
    w.marker.write_text("green\n")  # what the old script wrote before its health check
    r = w.once(expect=1)
    assert read(w.marker) == "blue\n", r.explain()
    assert w.served() == "v1" and w.routed() == "blue"
    # Next runs back off; the marker stays right even when it is broken again meanwhile.
    w.marker.write_text("garbage")
    w.once(expect=1)
    assert read(w.marker) == "blue\n"


def test_failed_nginx_test_restores_include_and_keeps_traffic(world: Callable[..., World]) -> None:
    w = world()
    w.once()
    include = read(w.include)
    w.set(image="bgtest:v2", activeColor="green")

    # nginx -t fails (a broken main config): the previous include is put back, traffic stays on v1.
    conf = w.nginx.conf_path.read_text()
    w.nginx.conf_path.write_text(conf.replace("http {", "http {\n    this_is_not_a_directive on;", 1))
    workers = w.nginx.worker_pids()
    with Traffic(w.nginx.public_url_for(w.app) + "/actuator/health") as traffic:
        r = w.once(expect=1)
        assert any("-t failed" in m and "this_is_not_a_directive" in m for m in r.messages()), r.explain()
        assert read(w.include) == include
        assert w.served() == "v1" and w.routed() == "blue" and read(w.marker) == "blue\n"
        assert w.nginx.worker_pids() == workers
        assert condition(w.status(), "Degraded")["status"] == "True"
        # The new color was created and is healthy: only the switch is left for the next run.
        assert w.container("green").status == "running"

        # A reload command that fails: same.
        w.nginx.conf_path.write_text(conf)
        w.set(nginx={"reloadCommand": ["sh", "-c", "echo 'reload: [error] refused by test' >&2; exit 1"]})
        r = w.once(expect=1)
        assert any("refused by test" in m for m in r.messages()), r.explain()
        assert read(w.include) == include and w.served() == "v1" and read(w.marker) == "blue\n"

        # A reload accepted but not taken by the master (it signals nothing): not confirmed, include restored.
        w.set(nginx={"reloadCommand": ["true"], "verifyTimeoutSeconds": 1})
        r = w.once(expect=1)
        assert any("include" in m and "restored" in m for m in r.messages()), r.explain()
        assert read(w.include) == include and w.served() == "v1" and read(w.marker) == "blue\n"

        # Fixed: the next run completes the deploy.
        w.set(nginx={"reloadCommand": w.nginx.reload_command, "verifyTimeoutSeconds": 5})
        w.once()
    w.assert_converged_on("green", "v2")
    bad = [a for a in traffic.answers if a.status != 200 or a.version not in ("v1", "v2")]
    assert bad == [], bad[:5]
    seen = [a.version or "" for a in traffic.answers]  # every version is v1 or v2 (checked above)
    assert seen == sorted(seen), "v2 served before the deploy completed"
