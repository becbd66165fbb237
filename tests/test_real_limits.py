"""spec.resources on a real dockerd (issue 14): limits in `docker inspect`, and a capacity check that refuses.

The small host is simulated through the documented seam BLUEGREEN_MEMINFO (a file shaped like /proc/meminfo);
everything else is real: the controller as a subprocess, Docker, nginx, the state dir.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.factories import app_doc
from tests.support.containers import LABEL_APP, remove_containers
from tests.support.controller_run import World, condition, run_reconcile
from tests.support.nginx import NginxInstance

pytestmark = [pytest.mark.docker, pytest.mark.nginx]

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024**2


def meminfo(path: Path, total_mib: int, available_mib: int) -> Path:
    path.write_text(
        f"MemTotal:       {total_mib * 1024} kB\nMemFree:        {available_mib * 1024} kB\n"
        f"MemAvailable:   {available_mib * 1024} kB\nBuffers:             0 kB\n"
    )
    return path


def host_config(w: World, color: str) -> dict[str, Any]:
    c = w.container(color)
    assert c is not None
    c.reload()
    hc: dict[str, Any] = c.attrs["HostConfig"]
    return hc


def test_limits_are_applied_and_a_small_host_refuses_the_new_color(
    docker_client: Any, test_images: dict[str, str], app_name: str, nginx: NginxInstance, tmp_path: Path, session_id: str
) -> None:
    limits = {"memory": "64m", "memoryReservation": "32m", "cpus": 0.5, "pidsLimit": 64}
    w = World(docker_client, app_name, nginx, tmp_path, session_id, resources=limits)
    w.once()
    w.assert_serving("blue", "v1")
    hc = host_config(w, "blue")
    assert (hc["Memory"], hc["MemoryReservation"], hc["NanoCpus"], hc["PidsLimit"]) == (64 * MIB, 32 * MIB, 500_000_000, 64)
    assert w.status()["desired"]["resources"] == limits

    # The next release, with a bigger limit, on a host that has 300 MiB available of 1 GiB (256 MiB headroom).
    w.set(image="bgtest:v2", activeColor="green", resources={**limits, "memory": "96m"})
    small = {"BLUEGREEN_MEMINFO": str(meminfo(tmp_path / "meminfo", 1024, 300))}
    before = w.snapshot()
    r = run_reconcile(w.spec_path, w.state, "--once", env=small)
    assert r.returncode == 1, r.explain()
    lines = [ln for ln in r.messages() if "InsufficientCapacity" in ln]
    assert len(lines) == 1, r.explain()
    for figure in ("96 MiB (its memory limit)", "the host has 44 MiB", f"MemAvailable 300 MiB in {tmp_path / 'meminfo'}", "256 MiB headroom"):
        assert figure in lines[0], lines[0]
    assert w.container("green") is None  # nothing started
    assert w.snapshot() == before  # blue, include, marker, Nginx workers and history untouched
    w.assert_serving("blue", "v1")
    assert condition(w.status(), "Degraded")["reason"] == "InsufficientCapacity"
    plan = run_reconcile(w.spec_path, w.state, "--plan", "--json", env=small)
    assert plan.returncode == 1, plan.explain()
    assert [b["reason"] for b in json.loads(plan.stdout)[0]["blockers"]] == ["InsufficientCapacity"]

    # The override, on the same small host: the new color is deployed with its own limits (a new revision);
    # blue keeps the ones it was created with.
    w.set(resources={**limits, "memory": "96m", "skipCapacityCheck": True})
    r = run_reconcile(w.spec_path, w.state, "--once", env=small)
    assert r.returncode == 0, r.explain()
    w.assert_serving("green", "v2")
    assert host_config(w, "green")["Memory"] == 96 * MIB
    assert host_config(w, "blue")["Memory"] == 64 * MIB


# ------------------------------------------------------------------------------------------- bad input

BAD: list[tuple[str, dict[str, Any], str]] = [
    ("memory-1x", {"memory": "1x"}, "spec.resources.memory: memory '1x' is not a size"),
    ("memory-zero", {"memory": "0g"}, "spec.resources.memory: memory must be more than 0"),
    ("memory-absurd", {"memory": "4096g"}, "spec.resources.memory: memory 4096g is more than 1024g"),
    ("memory-bare-number", {"memory": 1073741824}, "spec.resources.memory: memory 1073741824 has no unit"),
    ("cpus-negative", {"cpus": -1}, "spec.resources.cpus: cpus -1 is out of range"),
    ("reservation-above-limit", {"memory": "256m", "memoryReservation": "1g"}, "memoryReservation 1g is more than memory 256m"),
    ("pids-zero", {"pidsLimit": 0}, "spec.resources.pidsLimit"),
]


def test_bad_resources_exit_2_with_one_line_each_and_change_nothing(tmp_path: Path, docker_client: Any) -> None:
    """One run over a directory of broken specs (one interpreter start-up): a line per file, naming the field."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLUEGREEN_")}
    env["PYTHONPATH"] = str(ROOT)
    specs = tmp_path / "specs"
    specs.mkdir()
    names = {}
    for case, resources, _ in BAD:
        name = names[case] = f"t{uuid.uuid4().hex[:8]}"
        doc = app_doc(
            name,
            image="bgtest:v1",
            marker=str(tmp_path / "run" / name / "active"),
            labels={"bluegreen.test": "bad-resources"},
            nginx={"upstreamFile": str(tmp_path / "nginx" / f"{name}.upstream.conf"), "controlUrl": "http://127.0.0.1:9"},
            resources=resources,
        )
        (specs / f"{case}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    argv = [sys.executable, "-m", "controller", "--once", "-f", str(specs), "--state-dir", str(tmp_path / "state")]
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, check=False)
        assert p.returncode == 2, p.stderr
        assert "Traceback" not in p.stdout + p.stderr
        problems = sorted(ln for ln in p.stderr.splitlines() if not ln.startswith("{"))
        assert len(problems) == len(BAD), p.stderr
        for line, (case, _, needle) in zip(problems, sorted(BAD), strict=True):
            assert line.startswith(f"reconcile: {specs / case}.yaml: ") and needle in line, line
        for name in names.values():
            assert docker_client.containers.list(all=True, filters={"label": f"{LABEL_APP}={name}"}) == []
        assert not (tmp_path / "state").exists() and not (tmp_path / "nginx").exists() and not (tmp_path / "run").exists()
    finally:
        remove_containers(docker_client, [{"label": f"{LABEL_APP}={n}"} for n in names.values()])
