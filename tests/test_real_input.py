"""Hostile or surprising spec files against the real CLI, a real dockerd and a real nginx (issue 10, items 7-9).

- One bad file (1 KB of nesting that blew the recursion limit, a tab in healthCheck.path that httpx refused
  mid-pass, a duplicate key) is that file's one-line error: `--once` still converges every valid app and
  exits 2; `--watch` starts with it present, serves the valid app, and picks the file up once it is fixed.
- env values reach the container as the text written (`1.10`, not `1.1`).
- A bindAddress written non-canonically (`0:0:0:0:0:0:0:1`) deploys and then stays converged.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.containers import LABEL_APP, remove_containers
from tests.support.controller_run import (
    app_spec,
    container,
    read,
    routed_color,
    run_reconcile,
    served_version,
    start_reconcile,
    write_spec,
)
from tests.support.nginx import NginxInstance
from tests.support.wait import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.nginx]

# About 1 KB: PyYAML's composer recursed once per level and raised RecursionError for the whole run.
DEEP = "apiVersion: bluegreen/v1\nkind: " + "[" * 500 + "]" * 500 + "\n"
# Written as an operator would, unquoted; YAML 1.1 made them 1.1, 668, False and 45000.
RAW_ENV = "  env:\n    V_FLOAT: 1.10\n    V_OCTAL: 01234\n    V_BOOL: NO\n    V_SEXAGESIMAL: 12:30:00\n"
WANT_ENV = {"V_FLOAT": "1.10", "V_OCTAL": "01234", "V_BOOL": "NO", "V_SEXAGESIMAL": "12:30:00"}


def _with_raw_env(doc: dict[str, Any]) -> str:
    text = yaml.safe_dump(doc, sort_keys=False)
    assert text.rstrip("\n").splitlines()[-1].startswith("  "), "spec must be the document's last mapping"
    return text + RAW_ENV


def _bad_files(specs: Path, inst: NginxInstance, tmp_path: Path, session_id: str) -> dict[str, str]:
    """Three broken specs; returns file name -> what its one error line must say."""
    (specs / "deep.yaml").write_text(DEEP)
    tab = app_spec("tabapp", inst, tmp_path, "bgtest:v1", "blue", session_id=session_id, healthCheck={"path": "/actuator/\thealth"})
    write_spec(specs / "tab.yaml", tab)
    dup = yaml.safe_dump(app_spec("dupapp", inst, tmp_path, "bgtest:v1", "blue", session_id=session_id), sort_keys=False)
    (specs / "dup.yaml").write_text(dup + "  image: bgtest:v2\n")
    return {
        "deep.yaml": "line 2 column 38: invalid YAML: nested deeper than 32 levels",
        "dup.yaml": "invalid YAML: duplicate key 'image'",
        "tab.yaml": "spec.healthCheck.path: '/actuator/\\thealth' is not a URL path: it contains '\\t'",
    }


def _env_of(docker_client: Any, name: str) -> dict[str, str]:
    c = container(docker_client, name)
    assert c is not None, name
    return dict(e.split("=", 1) for e in c.attrs["Config"]["Env"])


def test_once_reconciles_every_valid_app_past_hostile_spec_files(
    docker_client: Any, test_images: dict[str, str], app_name: str, tmp_path: Path, session_id: str
) -> None:
    other = f"{app_name}-b"
    inst = NginxInstance.start(tmp_path / "nginx2", [app_name, other, "tabapp", "dupapp"])
    try:
        specs = tmp_path / "specs"
        specs.mkdir()
        docs = {
            app_name: app_spec(app_name, inst, tmp_path, "bgtest:v1", "blue", session_id=session_id),
            other: app_spec(other, inst, tmp_path, "bgtest:v2", "green", session_id=session_id),
        }
        write_spec(specs / f"{app_name}.yaml", docs[app_name])
        (specs / f"{other}.yaml").write_text(_with_raw_env(docs[other]))
        bad = _bad_files(specs, inst, tmp_path, session_id)

        r = run_reconcile(specs, tmp_path / "state", "--once", timeout=120)
        assert r.returncode == 2, r.explain()
        assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.explain()
        lines = r.messages()
        assert len(lines) == len(bad), r.explain()
        for line, (fname, needle) in zip(lines, sorted(bad.items()), strict=True):
            assert line.startswith(f"reconcile: {specs / fname}: ") and needle in line, (line, needle)
        assert sorted(r.stdout.splitlines()) == sorted(f"{n}: converged (4 actions)" for n in docs), r.explain()
        for name, color, version in ((app_name, "blue", "v1"), (other, "green", "v2")):
            assert served_version(inst, name) == version
            assert routed_color(inst, name, docs[name]["spec"]["ports"]) == color
            assert read(Path(docs[name]["spec"]["marker"])) == f"{color}\n"
        # The env reached the container as written.
        env = _env_of(docker_client, f"{other}-green")
        assert {k: env.get(k) for k in WANT_ENV} == WANT_ENV
        # The broken files' apps were not touched.
        for name in ("tabapp", "dupapp"):
            assert docker_client.containers.list(all=True, filters={"label": f"{LABEL_APP}={name}"}) == []
    finally:
        inst.stop()
        remove_containers(docker_client, [{"label": f"{LABEL_APP}={n}"} for n in (other, "tabapp", "dupapp")])


def _logs(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in (read(path) or "").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a line being written
    return out


def test_watch_starts_with_a_hostile_spec_present_and_picks_it_up_once_fixed(
    docker_client: Any, test_images: dict[str, str], app_name: str, tmp_path: Path, session_id: str
) -> None:
    other = f"{app_name}-b"
    inst = NginxInstance.start(tmp_path / "nginx2", [app_name, other])
    log = tmp_path / "watch.log"
    proc: subprocess.Popen[str] | None = None
    try:
        specs = tmp_path / "specs"
        specs.mkdir()
        doc = app_spec(app_name, inst, tmp_path, "bgtest:v1", "blue", session_id=session_id)
        write_spec(specs / f"{app_name}.yaml", doc)
        (specs / "deep.yaml").write_text(DEEP)

        proc = start_reconcile(specs, tmp_path / "state", "--watch", "--log-format", "json", "--resync", "3600", stderr_path=log)
        wait_until(lambda: served_version(inst, app_name) == "v1", timeout=90, message="the valid app served through nginx")
        assert proc.poll() is None, read(log)
        invalid = [e for e in _logs(log) if e.get("event") == "spec.invalid"]
        assert len(invalid) == 1 and invalid[0]["file"] == str(specs / "deep.yaml"), invalid
        assert "nested deeper than 32 levels" in invalid[0]["error"]
        assert not any("Traceback" in str(e) or e.get("level") == "critical" for e in _logs(log))

        # Fixing the file (an atomic save, as editors do) deploys its app; the first one is left alone.
        other_doc = app_spec(other, inst, tmp_path, "bgtest:v2", "green", session_id=session_id)
        tmp = specs / ".deep.yaml.swp"
        tmp.write_text(_with_raw_env(other_doc))
        os.replace(tmp, specs / "deep.yaml")
        wait_until(lambda: served_version(inst, other) == "v2", timeout=90, message="the fixed app served through nginx")
        assert proc.poll() is None, read(log)
        assert any(e.get("event") == "spec.valid" and e.get("file") == str(specs / "deep.yaml") for e in _logs(log))
        assert {k: _env_of(docker_client, f"{other}-green").get(k) for k in WANT_ENV} == WANT_ENV
        assert served_version(inst, app_name) == "v1"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, read(log)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        inst.stop()
        remove_containers(docker_client, [{"label": f"{LABEL_APP}={other}"}])


def test_non_canonical_ipv6_bind_address_deploys_and_stays_converged(
    docker_client: Any, test_images: dict[str, str], app_name: str, nginx: NginxInstance, tmp_path: Path, session_id: str
) -> None:
    """`0:0:0:0:0:0:0:1` used to deploy, then be LiveColorOutdated forever: Docker reports HostIp `::1`."""
    doc = app_spec(app_name, nginx, tmp_path, "bgtest:v1", "blue", session_id=session_id, bindAddress="0:0:0:0:0:0:0:1")
    spec = write_spec(tmp_path / "specs" / f"{app_name}.yaml", doc)
    state = tmp_path / "state"
    first = run_reconcile(spec, state, "--once", timeout=120)
    assert first.returncode == 0, first.explain()
    assert served_version(nginx, app_name) == "v1"
    c = container(docker_client, f"{app_name}-blue")
    assert c is not None and c.attrs["HostConfig"]["PortBindings"]["8081/tcp"][0]["HostIp"] == "::1"

    # Converged, nothing to do: before, every later run was blocked (LiveColorOutdated, exit 1).
    again = run_reconcile(spec, state, "--once", timeout=120)
    assert again.returncode == 0 and again.stdout.strip() == f"{app_name}: converged", again.explain()
