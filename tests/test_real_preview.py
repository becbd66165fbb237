"""spec.preview on real parts: real dockerd, the SHIPPED nginx site (Basic Auth, flag, preview route), the real CLI.

One test walks the whole life of a preview (it shares one deploy, which is most of its cost): preview up, reached
by header and by cookie and by nothing else, behind Basic Auth; promotion is a switch that creates nothing and
takes well under a second of controller work; a failing preview leaves the live color serving.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.spec.directory import load_app
from controller.world.fake import FakeWorld
from tests.support.controller_run import Run, app_spec, run_reconcile, with_spec, write_spec
from tests.support.nginx import NginxInstance
from tests.support.shipped_site import start_shipped

USERS = {"ops": "correct horse"}
AUTH = ("ops", "correct horse")
HEADER = {"X-Bluegreen-Preview": "1"}
COOKIE = {"Cookie": "other=x; bluegreen_preview=1"}


@pytest.fixture
def shipped(tmp_path: Path, app_name: str, nginx: NginxInstance) -> Iterator[NginxInstance]:
    inst = start_shipped(tmp_path / "shipped", [app_name], USERS)
    try:
        yield inst
    finally:
        inst.stop()


def _converge(path: Path, doc: dict[str, Any], state: Path, inst: NginxInstance) -> Run:
    write_spec(path, doc)
    r = run_reconcile(path, state)
    assert r.returncode == 0, r.explain() + inst.error_log_text()[-2000:]
    return r


def _version(c: httpx.Client, url: str, headers: dict[str, str] | None = None, auth: Any = AUTH) -> str:
    r = c.get(url + "/version", headers=headers, auth=auth)
    assert r.status_code == 200, (r.status_code, r.text[:200])
    return r.text.strip()


def _condition(state: Path, app: str, kind: str) -> dict[str, Any]:
    status = json.loads((state / "apps" / app / "status.json").read_text())
    return next(c for c in status["conditions"] if c["type"] == kind)


def _ids(docker_client: Any, app: str) -> dict[str, str]:
    return {c.name: c.id for c in docker_client.containers.list(all=True, filters={"label": f"bluegreen.app={app}"})}


def test_preview_header_cookie_auth_promotion_and_failure(
    tmp_path: Path, app_name: str, shipped: NginxInstance, test_images: dict[str, str], session_id: str, docker_client: Any
) -> None:
    state, path = tmp_path / "state", tmp_path / "spec.yaml"
    doc = app_spec(app_name, shipped, tmp_path, test_images["v1"], "blue", session_id=session_id, healthCheck={"stableSeconds": 0.5})
    live = with_spec(doc, nginx={"switch": "flag"})
    _converge(path, live, state, shipped)
    url = shipped.public_url_for(app_name)
    preview_route = f"{shipped.control_url}/bluegreen-preview/{app_name}/actuator/health"
    ports = live["spec"]["ports"]

    with httpx.Client(trust_env=False, timeout=5) as c:
        # No preview yet: asking for one gets the live color (there is nothing else to reach).
        assert _version(c, url, HEADER).startswith("v1")

        _converge(path, with_spec(live, preview={"image": test_images["v2"], "env": {"FEATURE": "on"}}), state, shipped)
        assert _condition(state, app_name, "PreviewReady")["status"] == "True"
        assert _condition(state, app_name, "Ready")["status"] == "True"
        # Only on request: header or cookie (exactly "1"); everyone else keeps the live color.
        assert _version(c, url).startswith("v1")
        assert _version(c, url, HEADER).startswith("v2")
        assert _version(c, url, COOKIE).startswith("v2")
        assert _version(c, url, {"X-Bluegreen-Preview": "0"}).startswith("v1")
        assert _version(c, url, {"Cookie": "bluegreen_preview=yes"}).startswith("v1")
        assert c.get(url + "/env?FEATURE", headers=HEADER, auth=AUTH).text.strip().endswith("on")  # the preview's env
        # Behind the same Basic Auth, and the actuator deny holds for preview requests too.
        for ask in (HEADER, COOKIE):
            assert c.get(url + "/version", headers=ask).status_code == 401
            assert c.get(url + "/version", headers=ask, auth=("ops", "wrong")).status_code == 401
            assert c.get(url + "/actuator/env", headers=ask, auth=AUTH).status_code == 403
        # The control server confirms the preview route as it confirms the live one.
        probe = c.get(preview_route)
        assert probe.status_code == 200 and probe.headers["x-bluegreen-upstream"] == f"127.0.0.1:{ports['green']}"
        assert c.get(f"{shipped.control_url}/bluegreen/{app_name}/actuator/health").headers["x-bluegreen-upstream"].endswith(
            f":{ports['blue']}"
        )

        # Promotion: image <- preview image, flip, drop preview (its env carried into env: the same revision).
        # A switch only: no container created or removed.
        before = _ids(docker_client, app_name)
        promoted = with_spec(live, image=test_images["v2"], activeColor="green", env={"FEATURE": "on"})
        run = _converge(path, promoted, state, shipped)
        assert _ids(docker_client, app_name) == before
        done = [e for e in run.logs() if e.get("event") == "action.done"]
        assert [e["action"] for e in done] == ["SwitchPreview", "SwitchRoute", "WriteMarker"], done
        assert sum(float(e["seconds"]) for e in done) < 1.0, done
        assert _version(c, url).startswith("v2") and _version(c, url, HEADER).startswith("v2")
        assert c.get(preview_route).headers["x-bluegreen-upstream"].endswith(f":{ports['green']}")

        # A failing preview (never healthy) degrades the preview only: the live color keeps serving everyone.
        failing = with_spec(promoted, preview={"image": test_images["never"]}, healthCheck={"timeoutSeconds": 1.5})
        run = _converge(path, failing, state, shipped)
        preview = _condition(state, app_name, "PreviewReady")
        assert preview["status"] == "False" and preview["reason"] == "PreviewFailed", preview
        assert _condition(state, app_name, "Degraded")["status"] == "False"
        assert _condition(state, app_name, "Ready")["status"] == "True"
        assert any(e.get("event") == "preview.failed" for e in run.logs())
        assert _version(c, url).startswith("v2") and _version(c, url, HEADER).startswith("v2")
        assert _version(c, url, COOKIE).startswith("v2")
        # The live container was never touched.
        assert _ids(docker_client, app_name)[f"{app_name}-green"] == before[f"{app_name}-green"]

        # FakeWorld's model of the site (controller/world/fake.py) answers like the real control routes for every
        # state of the two flags; the controller's files are put back afterwards.
        app = load_app(path)
        include = app.upstream_file.read_text()
        world = FakeWorld(files={app.upstream_file: include}, include_paths={app.upstream_file})
        world.reload()
        saved = {f: f.read_text() if f.exists() else None for f in (app.flag_file, app.preview_flag_file)}
        try:
            for flag in (False, True):
                for preview_flag in (False, True):
                    for f, on, content in ((app.flag_file, flag, "green\n"), (app.preview_flag_file, preview_flag, "preview\n")):
                        if on:
                            f.write_text(content)
                            world.files[f] = content
                        else:
                            f.unlink(missing_ok=True)
                            world.files.pop(f, None)
                    for route, fake in (("bluegreen", world.routed), ("bluegreen-preview", world.preview_routed)):
                        real = c.get(f"{shipped.control_url}/{route}/{app_name}/actuator/health").headers.get("x-bluegreen-upstream")
                        assert [real] == fake(app_name), (route, flag, preview_flag)
        finally:
            for f, kept in saved.items():
                if kept is None:
                    f.unlink(missing_ok=True)
                else:
                    f.write_text(kept)

