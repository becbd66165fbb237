"""Bad input for spec.failover / failoverAfterSeconds (issue 11 item 6): the real CLI, exit 2, one line naming
the field, nothing changed (no state dir, include, marker or container). Style of tests/test_bad_input.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from tests.factories import app_doc

ROOT = Path(__file__).resolve().parent.parent


def _doc(tmp: Path, name: str, i: int, **spec: Any) -> dict[str, Any]:
    return app_doc(
        name,
        image="bgtest:v1",
        ports={"blue": 18681 + 2 * i, "green": 18682 + 2 * i},
        marker=str(tmp / "run" / name / "active"),
        labels={"bluegreen.test": "failover-input"},
        nginx={"upstreamFile": str(tmp / "nginx" / f"{name}.upstream.conf"), "controlUrl": "http://127.0.0.1:9"},
        **spec,
    )


CASES: list[tuple[str, dict[str, Any], str]] = [
    ("fobad-stop", {"failover": "previous", "standby": "stop"}, "failover: previous needs standby: keep"),
    ("fobad-mode", {"failover": "sometimes"}, "spec.failover"),
    ("fobad-zero", {"failover": "previous", "failoverAfterSeconds": 0}, "spec.failoverAfterSeconds"),
    ("fobad-negative", {"failover": "previous", "failoverAfterSeconds": -5}, "spec.failoverAfterSeconds"),
    ("fobad-absurd", {"failover": "previous", "failoverAfterSeconds": 1e9}, "spec.failoverAfterSeconds"),
    ("fobad-text", {"failover": "previous", "failoverAfterSeconds": "soon"}, "spec.failoverAfterSeconds"),
]


@pytest.mark.parametrize("mode", ["--once", "--plan"])
def test_bad_failover_input_exits_2_with_one_line_each(tmp_path: Path, mode: str) -> None:
    """One run over a directory of bad specs (one process for every case): one line per file, naming the field."""
    specs = tmp_path / "specs"
    specs.mkdir()
    for i, (name, spec, _) in enumerate(CASES):
        (specs / f"{name}.yaml").write_text(yaml.safe_dump(_doc(tmp_path, name, i, **spec), sort_keys=False))
    state = tmp_path / "state"
    p = subprocess.run(
        [sys.executable, "-m", "controller", mode, "-f", str(specs), "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr + p.stdout
    lines = [ln for ln in p.stderr.splitlines() if not ln.startswith("{")]
    for line in p.stderr.splitlines():
        if line.startswith("{"):
            json.loads(line)  # anything else on stderr is a JSON log line
    assert len(lines) == len(CASES), p.stderr
    for name, _, needle in CASES:
        mine = [ln for ln in lines if f"{name}.yaml" in ln]
        assert len(mine) == 1 and mine[0].startswith("reconcile: ") and needle in mine[0], (name, lines)
    # Nothing changed.
    assert not (tmp_path / "nginx").exists() and not (tmp_path / "run").exists()
    assert not state.exists() or [q.name for q in state.iterdir()] == ["lock"]
    client = docker.from_env()
    try:
        assert client.containers.list(all=True, filters={"label": "bluegreen.test=failover-input"}) == []
    finally:
        client.close()
