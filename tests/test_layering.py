"""Importing the core and the CLI leaves the third-party clients out of the process (issue 9).

The import contracts (pyproject [tool.importlinter], run by `lint-imports` in scripts/gates.sh) read the source
and count an import inside a function like one at the top; this test checks what a real interpreter loads,
so a lazy import (`import boto3` inside the function that calls SSM) passes here and only here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = ("docker", "boto3", "botocore", "httpx", "requests")
MODULES = ("controller.app.reconcile", "controller.app.plan", "controller.app.observe", "controller.app.status", "controller.cli.main")


def test_importing_the_core_and_the_cli_loads_no_docker_aws_or_http_client() -> None:
    code = (
        f"import {', '.join(MODULES)}; import sys, json; "
        f"print(json.dumps(sorted(m for m in {CLIENTS!r} if m in sys.modules)))"
    )
    # A fresh interpreter: this pytest process has long imported all of them.
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == [], f"importing {', '.join(MODULES)} loaded {p.stdout.strip()}"
