"""spec.failover on real parts (issue 11 item 5): real dockerd, the SHIPPED nginx site (flag switch, Basic Auth),
the real CLI in `--once` (cron) and `--watch` mode.

The live color's container dies and its restarts never get healthy: the test rewrites the behaviour file baked
into the running container (`HEALTH=never`, it survives restarts of the same container) and makes its PID 1
exit, so Docker's restart policy brings it back failing. With `failover: previous` the previous color serves
within failoverAfterSeconds + 1 s; with `none` nothing moves.
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.controller_run import (
    app_spec,
    condition,
    container,
    history,
    run_reconcile,
    start_reconcile,
    status_file,
    with_spec,
    write_spec,
)
from tests.support.nginx import NginxInstance
from tests.support.shipped_site import start_shipped
from tests.support.wait import wait_until

AUTH = ("ops", "failover pw")


def _at(e: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(e["timestamp"]).replace("Z", "+00:00")).timestamp()
AFTER = 2.0  # failoverAfterSeconds in these tests


@pytest.fixture
def shipped(tmp_path: Path, app_name: str, nginx: NginxInstance) -> Iterator[NginxInstance]:
    inst = start_shipped(tmp_path / "shipped", [app_name], {AUTH[0]: AUTH[1]})
    try:
        yield inst
    finally:
        inst.stop()


class Deployed:
    """blue v1 served, then green v2 was deployed: green live, blue the warm previous color."""

    def __init__(self, tmp_path: Path, app: str, inst: NginxInstance, images: dict[str, str], session_id: str, **spec: Any) -> None:
        self.tmp, self.app, self.inst, self.state = tmp_path, app, inst, tmp_path / "state"
        base = app_spec(app, inst, tmp_path, images["v1"], "blue", session_id=session_id, **spec)
        self.doc = with_spec(base, nginx={"switch": "flag"}, healthCheck={"stableSeconds": 0.5, "timeoutSeconds": 2})
        self.spec = tmp_path / "spec.yaml"
        self.deploy(images["v1"], "blue")
        self.deploy(images["v2"], "green")

    def deploy(self, image: str, color: str) -> None:
        self.doc = with_spec(self.doc, image=image, activeColor=color)
        write_spec(self.spec, self.doc)
        r = run_reconcile(self.spec, self.state)
        assert r.returncode == 0, r.explain()
        # Polled (bounded): the first answer through a site nginx has just reloaded may come from a worker that is
        # still starting; what this set-up needs is that the color it deployed is the one served.
        want = "v1" if color == "blue" else "v2"
        wait_until(lambda: self.version() == want, timeout=10, message=f"the site serving {want}")

    def version(self) -> str | None:
        try:
            with httpx.Client(trust_env=False) as c:
                r = c.get(self.inst.public_url_for(self.app) + "/", auth=AUTH, timeout=2)
        except httpx.HTTPError:
            return None
        return r.headers.get("x-app-version") if r.status_code == 200 else None

    def kill_green_for_good(self, client: Any) -> float:
        """PID 1 of green exits; every restart of it fails its health check. Returns when it died (time.monotonic)."""
        c = container(client, f"{self.app}-green")
        assert c is not None
        code, out = c.exec_run(["cat", "/app/behaviour"])
        assert code == 0
        text = out.decode().replace("HEALTH=up", "HEALTH=never")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo("behaviour")
            info.size, info.mode = len(text.encode()), 0o644
            tar.addfile(info, io.BytesIO(text.encode()))
        assert c.put_archive("/app", buf.getvalue())
        died = time.monotonic()
        c.exec_run(["kill", "1"])  # the entrypoint traps TERM and exits 0: not a `docker stop`, so Docker restarts it
        return died


def test_failover_none_keeps_traffic_then_previous_fails_over_in_a_cron_run_and_holds(
    tmp_path: Path, app_name: str, shipped: NginxInstance, test_images: dict[str, str], session_id: str, docker_client: Any
) -> None:
    d = Deployed(tmp_path, app_name, shipped, test_images, session_id)
    d.kill_green_for_good(docker_client)
    marker = tmp_path / "state" / app_name / "active"
    # failover: none (the default): restart-only, nothing moves.
    r = run_reconcile(d.spec, d.state, timeout=60)
    assert r.returncode == 1, r.explain()
    flag = shipped.upstream_file(app_name).parent / f"{app_name}.green"
    assert flag.exists() and marker.read_text() == "green\n"
    assert d.version() != "v1"  # v1 on blue gets no traffic
    assert not any(e["action"] == "FailedOver" for e in history(d.state, app_name))
    assert all(c["type"] != "FailedOver" for c in status_file(d.state, app_name)["conditions"])

    # failover: previous (a new spec: the failing time counts from the first pass under it): a cron run waits at
    # most until the failover instant, then switches, in one run.
    d.doc = with_spec(d.doc, failover="previous", failoverAfterSeconds=AFTER)
    write_spec(d.spec, d.doc)
    r = run_reconcile(d.spec, d.state, timeout=60)
    assert r.returncode == 1, r.explain()  # not what the spec asks for: the operator has to act
    assert d.version() == "v1" and marker.read_text() == "blue\n"
    moved = [e for e in r.logs() if e.get("event") == "failover.done"]
    assert moved and moved[0]["color"] == "blue"
    # The run saw green failing, waited for it to pass again until the failover instant, then switched.
    plan_ev = next(e for e in r.logs() if e.get("event") == "reconcile.plan")
    assert plan_ev["actions"][0].startswith("WaitLiveOrFailover(green)") and "SwitchRoute(blue)" in plan_ev["actions"][1]
    assert AFTER - 0.2 <= _at(moved[0]) - _at(plan_ev) <= AFTER + 1, r.explain()
    st = status_file(d.state, app_name)
    fo = condition(st, "FailedOver")
    assert fo["status"] == "True" and fo["reason"] == "FailedOver" and "blue" in fo["message"]
    assert condition(st, "Degraded")["reason"] == "FailedOver"
    assert [e["color"] for e in history(d.state, app_name) if e["action"] == "FailedOver"] == ["blue"]
    # The next cron run holds it (exit 1, FailedOver): no flapping, no repeat.
    r = run_reconcile(d.spec, d.state, timeout=60)
    assert r.returncode == 1 and d.version() == "v1", r.explain()
    assert len([e for e in history(d.state, app_name) if e["action"] == "FailedOver"]) == 1


def test_failover_watch_serves_previous_color_within_delay_plus_one_second(
    tmp_path: Path, app_name: str, shipped: NginxInstance, test_images: dict[str, str], session_id: str, docker_client: Any
) -> None:
    d = Deployed(tmp_path, app_name, shipped, test_images, session_id, failover="previous", failoverAfterSeconds=AFTER)
    log = tmp_path / "watch.log"
    proc = start_reconcile(d.spec, d.state, "--watch", "--log-format", "json", stderr_path=log)
    try:
        wait_until(lambda: '"reconcile.done"' in log.read_text(), timeout=30, message="watch's first pass")
        died = d.kill_green_for_good(docker_client)
        wait_until(lambda: d.version() == "v1", timeout=AFTER + 10, interval=0.05, message="v1 serving after the failover")
        took = time.monotonic() - died
        assert took <= AFTER + 1.0, f"previous color served {took:.2f}s after the death\n{log.read_text()[-3000:]}"
        wait_until(lambda: '"failover.done"' in log.read_text(), timeout=10, message="failover logged")
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(15)
