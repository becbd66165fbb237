"""Maintenance (issue 22) on a real dockerd behind the shipped Nginx site, driven by the real CLI, watched by a bounded
loopback poller that records every answer of the public site in order.

- A wrapped migration (hooks.beforeSwitch.maintenance) answers, request after request: v1, then the site's 503s
  (Retry-After, the maintenance page), then v2; never a 502, a connection error, or v1 once maintenance began. The
  window of 503s is measured against the hook's own run (the RunHook step, container create to removal).
- A kill -9 of the controller while the hook runs leaves the site in maintenance; the next pass finishes: the same
  order, the hook run once.
- spec.maintenance: on with the message (HTML page, JSON for a client that asks for it, the password still asked),
  the control route confirms, --plan/--status show it; off: the live color answers again.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.controller_run import World, condition, run_reconcile, start_reconcile
from tests.support.nginx import NginxInstance
from tests.support.shipped_site import RETRY_AFTER, SHIPPED_USERS
from tests.support.wait import kill_9_when, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.nginx]

AUTH = next(iter(SHIPPED_USERS.items()))
FAST = {"healthCheck": {"stableSeconds": 0.5, "intervalSeconds": 0.1}}
HOOK_SLEEP = 2.0
HOOK = {"beforeSwitch": {"command": ["sh", "-c", f"echo migrating; sleep {HOOK_SLEEP:g}; echo migrated"], "timeoutSeconds": 60, "maintenance": True}}


class MaintWorld(World):
    def __init__(self, *args: Any, **spec: Any) -> None:
        super().__init__(*args, **{**FAST, **spec})
        self.set(nginx={"switch": "flag"})

    def run(self, *args: str, timeout: float = 60.0) -> Any:
        return run_reconcile(self.spec_path, self.state, "--log-format", "json", *args, timeout=timeout)

    def hook_containers(self) -> list[Any]:
        flt = {"label": [f"bluegreen.app={self.app}", "bluegreen.hook"]}
        return list(self.client.containers.list(all=True, sparse=True, filters=flt))


@dataclass(frozen=True)
class Answer:
    at: float
    kind: str  # v1, v2, ... (the body's first word on 200), "maint" (the site's 503 page), else "HTTP <n>" or the error


class Poller(threading.Thread):
    """GET /version through the public site on one keep-alive connection, as fast as it answers, bounded in count and
    time; every answer recorded in order."""

    def __init__(self, url: str, max_requests: int = 40_000, max_seconds: float = 120.0) -> None:
        super().__init__(daemon=True)
        self.url, self.max_requests, self.max_seconds = url, max_requests, max_seconds
        self.answers: list[Answer] = []
        self.stop = threading.Event()

    def run(self) -> None:
        end = time.monotonic() + self.max_seconds
        with httpx.Client(trust_env=False, timeout=5, auth=AUTH) as c:
            while not self.stop.is_set() and len(self.answers) < self.max_requests and time.monotonic() < end:
                self.answers.append(Answer(time.monotonic(), self._one(c)))
                time.sleep(0.002)

    def _one(self, c: httpx.Client) -> str:
        try:
            r = c.get(self.url)
        except httpx.HTTPError as e:
            return f"error {type(e).__name__}"
        if r.status_code == 200:
            return r.text.split()[0] if r.text.strip() else "empty"
        if (r.status_code, r.headers.get("retry-after"), r.headers.get("x-bluegreen-maintenance")) == (503, RETRY_AFTER, "1"):
            return "maint" if "Down for maintenance" in r.text else "maint without its page"
        return f"HTTP {r.status_code}"

    def finish(self) -> list[Answer]:
        self.stop.set()
        self.join(10)
        return self.answers

    def seen(self, kind: str) -> bool:
        return any(a.kind == kind for a in self.answers)


def runs(answers: list[Answer]) -> list[tuple[str, int]]:
    """The answers as runs of one kind: [("v1", 120), ("maint", 900), ("v2", 40)]."""
    out: list[tuple[str, int]] = []
    for a in answers:
        if out and out[-1][0] == a.kind:
            out[-1] = (a.kind, out[-1][1] + 1)
        else:
            out.append((a.kind, 1))
    return out


def window(answers: list[Answer]) -> float:
    """From the first maintenance answer to the first v2 answer."""
    first = next(a.at for a in answers if a.kind == "maint")
    return next(a.at for a in answers if a.kind == "v2") - first


def _polling_v1(site: NginxInstance, app: str) -> Poller:
    """A poller started on the public site, once it has seen v1 answer."""
    poller = Poller(site.public_url_for(app) + "/version")
    poller.start()
    wait_until(lambda: poller.seen("v1"), 10, message="the poller gets v1")
    return poller


def _v1_deployed_v2_wanted(w: MaintWorld, images: dict[str, str]) -> MaintWorld:
    """v1 converged on blue, then the spec set to v2 on green with the wrapped migration (HOOK)."""
    w.once()
    w.set(image=images["v2"], activeColor="green", hooks=HOOK)
    return w


def _step_seconds(r: Any, verb: str) -> float:
    done = [e["seconds"] for e in r.logs() if e.get("event") == "action.done" and e.get("action") == verb]
    assert done, r.explain()
    return float(sum(done))


def test_a_wrapped_migration_answers_v1_then_maintenance_then_v2(
    docker_client: Any, test_images: dict[str, str], app_name: str, shipped_site: NginxInstance, tmp_path: Path, session_id: str
) -> None:
    w = _v1_deployed_v2_wanted(MaintWorld(docker_client, app_name, shipped_site, tmp_path, session_id), test_images)
    code, planned = w.plan_json()
    verbs = [a["action"] for a in planned["actions"]]
    assert code == 1 and verbs[verbs.index("WaitHealthy") + 1 :] == [
        "SwitchMaintenance", "RunHook", "SwitchRoute", "SwitchMaintenance", "WriteMarker"
    ], planned  # fmt: skip
    poller = _polling_v1(shipped_site, app_name)
    r = w.once(timeout=120)
    wait_until(lambda: poller.answers[-1].kind == "v2", 10, message="the poller gets v2")
    answers = poller.finish()
    assert [k for k, _ in runs(answers)] == ["v1", "maint", "v2"], runs(answers)
    hook = _step_seconds(r, "RunHook")
    took = window(answers)
    print(f"\nmaintenance window {took:.3f}s for a hook step of {hook:.3f}s (sleep {HOOK_SLEEP:g}s); {runs(answers)}")
    assert HOOK_SLEEP <= took <= hook + 1.0, (took, hook)
    assert w.routed() == "green"
    assert condition(w.status(), "Maintenance")["status"] == "False"
    assert not Path(f"{shipped_site.upstream_file(app_name).parent}/{app_name}.green.maintenance").exists()


def test_a_kill_9_during_a_wrapped_migration_is_finished_by_the_next_pass(
    docker_client: Any, test_images: dict[str, str], app_name: str, shipped_site: NginxInstance, tmp_path: Path, session_id: str
) -> None:
    w = _v1_deployed_v2_wanted(MaintWorld(docker_client, app_name, shipped_site, tmp_path, session_id), test_images)
    poller = _polling_v1(shipped_site, app_name)
    proc = start_reconcile(w.spec_path, w.state, "--once", stderr_path=tmp_path / "killed.log")
    kill_9_when(lambda: any(c.status == "running" for c in w.hook_containers()), proc, 60, "the hook runs")
    assert poller.answers[-1].kind == "maint", runs(poller.answers)  # left in maintenance by the lost process ...
    r = w.once(timeout=120)  # ... and the next pass, from the desired state alone, ends it once v2 serves
    assert any(e.get("event") == "hook.resumed" for e in r.logs()), r.explain()
    wait_until(lambda: poller.answers[-1].kind == "v2", 10, message="the poller gets v2")
    answers = poller.finish()
    assert [k for k, _ in runs(answers)] == ["v1", "maint", "v2"], runs(answers)
    assert [h["output"] for h in w.status()["hooks"]] == [["migrating", "migrated"]]  # run once, collected
    assert w.hook_containers() == []


def test_spec_maintenance_on_and_off(
    docker_client: Any, test_images: dict[str, str], app_name: str, shipped_site: NginxInstance, tmp_path: Path, session_id: str
) -> None:
    w = MaintWorld(docker_client, app_name, shipped_site, tmp_path, session_id)
    w.once()
    url = shipped_site.public_url_for(app_name) + "/version"
    w.set(maintenance={"enabled": True, "message": "Back at 10:00 UTC, sorry!"})
    code, planned = w.plan_json()
    assert code == 1 and [a["action"] for a in planned["actions"]] == ["SwitchMaintenance"], planned
    w.once()
    with httpx.Client(trust_env=False, timeout=5) as c:
        r = c.get(url, auth=AUTH)
        assert (r.status_code, r.headers["retry-after"], r.headers["content-type"]) == (503, RETRY_AFTER, "text/html; charset=utf-8")
        assert "<p>Back at 10:00 UTC, sorry!</p>" in r.text and "<!--#" not in r.text
        r = c.get(url, auth=AUTH, headers={"Accept": "application/json"})
        assert r.status_code == 503 and r.json() == {"status": "maintenance", "message": "Back at 10:00 UTC, sorry!"}
        assert c.get(url).status_code == 401, "the maintenance page asks for the password like everything else"
        assert c.get(shipped_site.public_url_for(app_name) + "/actuator/health", auth=AUTH).status_code == 503
        # The control server and the colors' ports are not in maintenance: health checks and confirmations go on.
        assert c.get(f"{shipped_site.control_url}/bluegreen/{app_name}/actuator/health").status_code == 200
        assert c.get(f"{shipped_site.control_url}/bluegreen-maintenance/{app_name}").status_code == 503
        assert c.get(f"http://127.0.0.1:{w.ports['blue']}/version").status_code == 200
    st = w.status()
    cond = condition(st, "Maintenance")
    assert (cond["status"], cond["reason"]) == ("True", "Enabled") and condition(st, "Ready")["status"] == "True"
    again = w.once()  # converged: nothing touched
    assert not [e for e in again.logs() if e.get("event") == "action.start"], again.explain()
    w.set(maintenance={"enabled": False})
    w.once()
    with httpx.Client(trust_env=False, timeout=5) as c:
        assert c.get(url, auth=AUTH).text.startswith("v1")
        assert c.get(f"{shipped_site.control_url}/bluegreen-maintenance/{app_name}").status_code == 204
    assert condition(w.status(), "Maintenance")["status"] == "False"
