"""Bad input for spec.keepImages (issue 14 item 6): the real CLI exits 2 with one line naming the field,
and changes nothing (no state dir, no marker, no include, no container)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.factories import app_doc

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("value", "problem", "mode"),
    [
        (0, "Input should be greater than or equal to 1", "--once"),
        (0, "Input should be greater than or equal to 1", "--plan"),
        (-1, "Input should be greater than or equal to 1", "--once"),
        (True, "Input should be a valid integer", "--once"),
    ],
)
def test_bad_keep_images_is_one_line_exit_2_and_changes_nothing(value: Any, problem: str, mode: str, tmp_path: Path) -> None:
    name = "hyg"
    doc = app_doc(
        name,
        keepImages=value,
        marker=str(tmp_path / "run" / "active"),
        nginx={"upstreamFile": str(tmp_path / "nginx" / "hyg.upstream.conf"), "controlUrl": "http://127.0.0.1:9"},
    )
    spec = tmp_path / "specs" / "hyg.yaml"
    spec.parent.mkdir()
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    state = tmp_path / "state"
    p = subprocess.run(
        [sys.executable, "-m", "controller", mode, "-f", str(spec), "--state-dir", str(state), "--docker-url", "unix:///nonexistent.sock"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, stdin=subprocess.DEVNULL, check=False,
    )
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip() and not ln.startswith("{")]
    assert lines == [f"reconcile: {spec}: spec.keepImages: {problem}"], p.stderr
    assert "Traceback" not in p.stderr and p.stdout == ""
    assert not state.exists() and not (tmp_path / "run").exists() and not (tmp_path / "nginx").exists()
