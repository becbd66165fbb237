"""Importing the core and the CLI leaves the third-party clients out of the process (issue 9), and a no-op pass of
each cron mode loads only what that mode uses (issue 18 item 8).

The import contracts (pyproject [tool.importlinter], run by `lint-imports` in scripts/gates.sh) read the source
and count an import inside a function like one at the top; this test checks what a real interpreter loads,
so a lazy import (`import boto3` inside the function that calls SSM) passes here and only here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.controller_run import World, subprocess_env
from tests.support.nginx import NginxInstance

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


# --------------------------------------------------------------------------------------- per mode, after a no-op pass
# Issue 18 item 8: each mode imports only what it uses. The modules a no-op pass of an app without accessories,
# secrets, git or exported metrics loads, listed: a module that joins this path costs every cron run; if it must,
# add it here on purpose.
NO_OP_MODULES = frozenset(
    {
        "controller",
        "controller.app", "controller.app.apply", "controller.app.decide", "controller.app.failover",
        "controller.app.gates", "controller.app.gather", "controller.app.maintenance", "controller.app.observe", "controller.app.plan",
        "controller.app.preview", "controller.app.reconcile", "controller.app.requeue", "controller.app.routing",
        "controller.app.rules", "controller.app.rules.capacity", "controller.app.rules.depends_on",
        "controller.app.rules.desired", "controller.app.rules.failover", "controller.app.rules.foreign", "controller.app.rules.maintenance",
        "controller.app.rules.gates", "controller.app.rules.preview", "controller.app.rules.pruning",
        "controller.app.rules.route", "controller.app.rules.secrets", "controller.app.rules.stability", "controller.app.rules.standby",
        "controller.app.rules.switchback",
        "controller.app.status", "controller.app.steps", "controller.app.steps.gates", "controller.app.steps.prune",
        "controller.app.steps.verify",
        "controller.cli", "controller.cli.accessories", "controller.cli.main", "controller.cli.modes",
        "controller.drivers", "controller.drivers.aws", "controller.drivers.containers", "controller.drivers.host",
        "controller.drivers.mapping", "controller.drivers.probes", "controller.drivers.ssm",
        "controller.kernel", "controller.kernel.backoff", "controller.kernel.document", "controller.kernel.elapsed",
        "controller.kernel.errors",
        "controller.kernel.files", "controller.kernel.imageref", "controller.kernel.logs",
        "controller.runtime", "controller.runtime.build", "controller.runtime.options",
        "controller.spec", "controller.spec.base", "controller.spec.cache", "controller.spec.directory",
        "controller.store", "controller.store.counters", "controller.store.documents", "controller.store.metrics",
        "controller.store.releases",  # on purpose: every converged pass checks that the ledger names what serves
        "controller.store.state",
        "controller.world", "controller.world.actions", "controller.world.facts", "controller.world.protocol",
        "controller.world.secrets", "controller.world.verification",
    }
)  # fmt: skip
# Never on that path: the spec models and YAML (a spec-cache hit), the accessory modules, the git source, the
# spec-editing commands, the drivers of capacity, gates and Prometheus, what only some apps need, and pydantic (the
# state files this controller wrote are read back by their digest, without validation: controller/kernel/document.py).
NEVER = frozenset(
    {
        "yaml", "boto3", "botocore", "ruamel", "prometheus_client", "watchfiles", "pydantic", "pydantic_core",
        "controller.spec.app", "controller.spec.resources", "controller.spec.accessory", "controller.accessory",
        "controller.accessory.plan", "controller.accessory.reconcile", "controller.drivers.accessories", "controller.runtime.accessory_kind",
        "controller.runtime.source", "controller.drivers.git", "controller.runtime.watch", "controller.cli.release", "controller.spec.edit",
        "controller.drivers.capacity", "controller.drivers.gates", "controller.drivers.prometheus",
        "controller.drivers.registry", "controller.drivers.accesslog", "controller.export",
    }
)  # fmt: skip
# Third-party packages a no-op pass may load: the Docker SDK and its requests stack, httpx and its transport,
# annotated_types (the state documents' ranges), and (a pass that logs: --once at info) structlog, which imports asyncio.
THIRD_PARTY = frozenset({"docker", "requests", "urllib3", "charset_normalizer", "idna", "certifi", "cython_runtime",
                         "httpx", "httpcore", "h11", "anyio", "sniffio", "annotated_types",
                         "typing_extensions", "typing_inspection"})  # fmt: skip
LOGS = frozenset({"structlog", "asyncio"})

# sys.modules after one pass in a fresh interpreter. httpx imports rich, click and pygments (its own command line)
# whenever they are installed: they are hidden here as on a host that ran `pip install .` (they come with [test]).
MODULES_AFTER = """
import json, sys
class Hide:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("rich", "click", "pygments"):
            raise ImportError(name + " hidden: not installed without the [test] extra")
sys.meta_path.insert(0, Hide())
from controller.cli.main import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


@pytest.mark.docker
@pytest.mark.nginx
def test_a_no_op_pass_of_each_mode_loads_only_what_it_uses(
    docker_client: Any, test_images: dict[str, str], app_name: str, nginx: NginxInstance, tmp_path: Path, session_id: str
) -> None:
    w = World(docker_client, app_name, nginx, tmp_path, session_id, healthCheck={"stableSeconds": 0})
    w.once()  # deploys blue (the spec validated and cached); every run below has nothing to do
    for mode in ("--once", "--plan", "--status"):
        argv = [sys.executable, "-c", MODULES_AFTER, mode, "-f", str(w.spec_path), "--state-dir", str(w.state)]
        p = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=subprocess_env(None), timeout=120, check=False)
        result = json.loads(p.stderr.splitlines()[-1])
        assert result["code"] == 0, p.stdout + p.stderr
        modules = set(result["modules"])
        tops = {m.split(".")[0] for m in modules}
        ours = {m for m in modules if m.split(".")[0] == "controller"}
        third = {t for t in tops if t not in sys.stdlib_module_names and not t.startswith("_") and t != "controller"}
        assert not (modules | tops) & NEVER, f"{mode} loaded {sorted((modules | tops) & NEVER)}"
        assert ours == NO_OP_MODULES, f"{mode}: joined {sorted(ours - NO_OP_MODULES)}, left {sorted(NO_OP_MODULES - ours)}"
        logs = LOGS if mode == "--once" else frozenset()  # --plan and --status log nothing: no structlog, no asyncio
        assert third <= THIRD_PARTY | logs, f"{mode} loaded {sorted(third - THIRD_PARTY - logs)}"
        assert not (tops & LOGS - logs), f"{mode} loaded {sorted(tops & LOGS - logs)}"
