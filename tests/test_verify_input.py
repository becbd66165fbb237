"""Bad `spec.verify` input (issue 11 items 1 and 6, `verify.prometheus` included), through the real CLI: exit 2,
one `reconcile:` line naming the field, nothing changed (no container for the app, no include, no marker, no state
dir), no credential echoed."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.factories import app_doc

ROOT = Path(__file__).resolve().parent.parent

CASES: dict[str, tuple[Any, str]] = {
    "negative-window": ({"windowSeconds": -1}, "verify.windowSeconds"),
    "absurd-window": ({"windowSeconds": 1e9}, "verify.windowSeconds"),
    "rate-above-one": ({"maxErrorRate": 1.5}, "verify.maxErrorRate"),
    "zero-requests": ({"minRequests": 0}, "verify.minRequests"),
    "negative-p99": ({"maxLatencyP99Ms": -5}, "verify.maxLatencyP99Ms"),
    "health-failures-text": ({"healthFailures": "three"}, "verify.healthFailures"),
    "relative-log": ({"accessLog": "logs/access.log"}, "verify.accessLog"),
    "log-with-semicolon": ({"accessLog": "/var/log/x;y"}, "verify.accessLog"),
    "unknown-field": ({"windowSecs": 5}, "verify.windowSecs"),
    "not-a-mapping": ("yes", "verify"),
}
# verify.prometheus (the optional instant query): no credential may be echoed either.
PROM_OK = {"url": "http://127.0.0.1:9090", "query": "vector(0)", "max": 1}
CASES |= {
    f"{case}-prometheus": ({"windowSeconds": 2, "prometheus": prom}, field)  # no case name ends another
    for case, (prom, field) in {
        "ftp-url": ({**PROM_OK, "url": "ftp://127.0.0.1/"}, "verify.prometheus.url"),
        "no-scheme": ({**PROM_OK, "url": "127.0.0.1:9090"}, "verify.prometheus.url"),
        "credentials": ({**PROM_OK, "url": "http://admin:s3cret@127.0.0.1:9090"}, "verify.prometheus.url"),
        "url-with-query": ({**PROM_OK, "url": "http://127.0.0.1:9090/?x=1"}, "verify.prometheus.url"),
        "empty-query": ({**PROM_OK, "query": ""}, "verify.prometheus.query"),
        "blank-query": ({**PROM_OK, "query": "   "}, "verify.prometheus.query"),
        "negative-max": ({**PROM_OK, "max": -1}, "verify.prometheus.max"),
        "nan-max": ({**PROM_OK, "max": "nan"}, "verify.prometheus.max"),
        "missing-query": ({"url": PROM_OK["url"], "max": 1}, "verify.prometheus.query"),
        "unknown-field": ({**PROM_OK, "maximum": 2}, "verify.prometheus.maximum"),
    }.items()
}


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str], dict[str, str]]:
    """One run over a directory holding every case (one broken spec never hides another's problem)."""
    tmp = tmp_path_factory.mktemp("verify-input")
    names = {}
    for case, (verify, _field) in CASES.items():
        name = names[case] = f"vi{uuid.uuid4().hex[:8]}"
        doc = app_doc(
            name,
            image="bgtest:v1",
            marker=str(tmp / "run" / name / "active"),
            labels={"bluegreen.test": "bad-input"},
            nginx={"upstreamFile": str(tmp / "nginx" / f"{name}.upstream.conf"), "controlUrl": "http://127.0.0.1:9"},
            verify=verify,
        )
        (tmp / "specs").mkdir(exist_ok=True)
        (tmp / "specs" / f"{case}.yaml").write_text(yaml.safe_dump(doc))
    argv = [sys.executable, "-m", "controller", "--once", "-f", str(tmp / "specs"), "--state-dir", str(tmp / "state")]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT, stdin=subprocess.DEVNULL)
    return tmp, p, names


@pytest.mark.parametrize("case", list(CASES))
def test_bad_verify_input_exits_2_naming_the_field_and_changes_nothing(
    case: str, ran: tuple[Path, subprocess.CompletedProcess[str], dict[str, str]], docker_client: Any
) -> None:
    tmp, p, names = ran
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.splitlines() if not ln.startswith("{") and f"{case}.yaml" in ln]
    assert len(lines) == 1 and lines[0].startswith("reconcile: ") and CASES[case][1] in lines[0], p.stderr
    assert docker_client.containers.list(all=True, filters={"label": f"bluegreen.app={names[case]}"}) == []
    assert not (tmp / "nginx").exists() and not (tmp / "run").exists()
    assert "s3cret" not in p.stderr
