"""Bad input for spec.checks and spec.hooks (issue 12 item 5): exit 2, one line naming the field, nothing changed.

One real CLI run over a directory holding one broken spec per case (each file is its own error, one line
each), and the same cases through the loader in-process for the exact message.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.kernel.errors import SpecError
from controller.spec.app import parse_app
from tests.factories import app_doc

ROOT = Path(__file__).resolve().parent.parent
OK_CHECK = {"http": {"path": "/version"}}

# (case id, spec fields, what the one line must name)
CASES: list[tuple[str, dict[str, Any], str]] = [
    ("check-unknown-field", {"checks": {"beforeSwitch": [{"script": "curl x"}]}}, "spec.checks.beforeSwitch.0.script: unknown field"),
    ("checks-unknown-phase", {"checks": {"afterSwitch": [OK_CHECK]}}, "spec.checks.afterSwitch: unknown field"),
    ("http-unknown-field", {"checks": {"beforeSwitch": [{"http": {"path": "/", "expect": 200}}]}}, "spec.checks.beforeSwitch.0.http.expect: unknown field"),
    ("hook-unknown-field", {"hooks": {"beforeSwitch": {"command": ["migrate"], "retries": 3}}}, "spec.hooks.beforeSwitch.retries: unknown field"),
    ("hooks-unknown-phase", {"hooks": {"duringSwitch": {"command": ["x"]}}}, "spec.hooks.duringSwitch: unknown field"),
    ("hook-empty-command", {"hooks": {"beforeSwitch": {"command": []}}}, "spec.hooks.beforeSwitch.command: command must name a program"),
    ("hook-empty-program", {"hooks": {"afterSwitch": {"command": ["", "x"]}}}, "spec.hooks.afterSwitch.command: command must name a program"),
    ("hook-no-command", {"hooks": {"beforeSwitch": {"timeoutSeconds": 5}}}, "spec.hooks.beforeSwitch.command: required field missing"),
    ("hook-nul", {"hooks": {"beforeSwitch": {"command": ["migrate", "a\0b"]}}}, "spec.hooks.beforeSwitch.command: 'a\\x00b' contains a NUL byte"),
    ("hook-timeout-zero", {"hooks": {"beforeSwitch": {"command": ["m"], "timeoutSeconds": 0}}}, "spec.hooks.beforeSwitch.timeoutSeconds: Input should be greater than 0"),
    ("check-empty-command", {"checks": {"beforeSwitch": [{"command": []}]}}, "spec.checks.beforeSwitch.0.command: command must name a program"),
    ("check-timeout-negative", {"checks": {"beforeSwitch": [{**OK_CHECK, "timeoutSeconds": -1}]}}, "spec.checks.beforeSwitch.0.timeoutSeconds: Input should be greater than 0"),
    ("check-both", {"checks": {"beforeSwitch": [{**OK_CHECK, "command": ["true"]}]}}, "spec.checks.beforeSwitch.0: a check needs exactly one of http or command"),
    ("check-neither", {"checks": {"beforeSwitch": [{"timeoutSeconds": 3}]}}, "spec.checks.beforeSwitch.0: a check needs exactly one of http or command"),
    ("check-bad-path", {"checks": {"beforeSwitch": [{"http": {"path": "version"}}]}}, "spec.checks.beforeSwitch.0.http.path: 'version' must start with /"),
    ("check-bad-status", {"checks": {"beforeSwitch": [{"http": {"path": "/", "expectStatus": 999}}]}}, "spec.checks.beforeSwitch.0.http.expectStatus"),
    ("check-empty-body", {"checks": {"beforeSwitch": [{"http": {"path": "/", "bodyContains": ""}}]}}, "spec.checks.beforeSwitch.0.http.bodyContains"),
    ("checks-not-a-list", {"checks": {"beforeSwitch": {"http": {"path": "/"}}}}, "spec.checks.beforeSwitch: Input should be a valid list"),
]


def _doc(tmp: Path, name: str, **spec: Any) -> dict[str, Any]:
    return app_doc(
        name,
        image="bgtest:v1",
        marker=str(tmp / "run" / name / "active"),
        labels={"bluegreen.test": "gates-input"},
        nginx={"upstreamFile": str(tmp / "nginx" / f"{name}.upstream.conf"), "controlUrl": "http://127.0.0.1:9"},
        **spec,
    )


@pytest.mark.parametrize(("case", "spec", "needle"), CASES, ids=[c[0] for c in CASES])
def test_the_loader_names_the_field_in_one_line(tmp_path: Path, case: str, spec: dict[str, Any], needle: str) -> None:
    with pytest.raises(SpecError) as e:
        parse_app(json.dumps(_doc(tmp_path, "gates", **spec)), "gates.yaml")
    message = str(e.value)
    assert "\n" not in message and needle in message, message


def test_valid_gates_load() -> None:
    app = parse_app(
        json.dumps(
            app_doc(
                checks={"beforeSwitch": [{"http": {"path": "/version?x=1", "expectStatus": 200, "bodyContains": "v2"}}, {"command": ["smoke"], "timeoutSeconds": 5}]},
                hooks={"beforeSwitch": {"command": ["migrate", "--up"], "timeoutSeconds": 120}, "afterSwitch": {"command": ["notify"]}},
            )
        ),
        "t.yaml",
    )
    assert app.spec.hooks is not None and app.spec.hooks.beforeSwitch is not None and app.spec.hooks.beforeSwitch.timeoutSeconds == 120
    assert app.spec.checks is not None and [c.command for c in app.spec.checks.beforeSwitch] == [None, ["smoke"]]
    # Gates shape no container: adding them keeps every revision (nothing is recreated).
    plain = parse_app(json.dumps(app_doc()), "t.yaml")
    assert [app.revision(c) for c in ("blue", "green")] == [plain.revision(c) for c in ("blue", "green")]


def test_the_cli_refuses_every_case_with_one_line_each_and_changes_nothing(tmp_path: Path, docker_client: Any) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    names = {}
    for i, (case, spec, _) in enumerate(CASES):
        name = f"gates{i}-{case}"[:50].rstrip("-")
        names[case] = name
        (specs / f"{name}.yaml").write_text(yaml.safe_dump(_doc(tmp_path, name, **spec), sort_keys=False))
    # A check command missing on the host (looked up on the PATH the check runs with): refused up front too.
    missing = {"checks": {"beforeSwitch": [{"command": ["no-such-smoke-tool-7f3a"]}]}}
    (specs / "gates-missing-tool.yaml").write_text(yaml.safe_dump(_doc(tmp_path, "gates-missing-tool", **missing), sort_keys=False))
    p = subprocess.run(
        [sys.executable, "-m", "controller", "--once", "-f", str(specs), "--state-dir", str(tmp_path / "state")],
        capture_output=True, text=True, timeout=60, cwd=ROOT, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stdout + p.stderr
    problems = [ln for ln in p.stderr.splitlines() if not ln.startswith("{")]
    assert len(problems) == len(CASES) + 1, p.stderr
    assert any(
        "gates-missing-tool.yaml: checks.beforeSwitch[0].command: no-such-smoke-tool-7f3a: command not found" in ln for ln in problems
    ), problems
    for case, _, needle in CASES:
        line = next((ln for ln in problems if f"{names[case]}.yaml" in ln), None)
        assert line is not None and line.startswith("reconcile: ") and needle in line, (case, line)
    # Nothing changed: no container, no include, no marker.
    assert docker_client.containers.list(all=True, filters={"label": "bluegreen.test=gates-input"}) == []
    assert not (tmp_path / "nginx").exists() and not (tmp_path / "run").exists()
    assert not (tmp_path / "state").exists()
