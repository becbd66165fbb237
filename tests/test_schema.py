"""The shipped JSON Schema is the one generated from the models, and every example spec validates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from controller.spec.accessory import json_schema as accessory_schema
from controller.spec.app import BlueGreenApp
from controller.spec.app import json_schema as bluegreen_schema
from controller.spec.directory import conflicts, load_app

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "controller" / "schema" / "bluegreen.schema.json"
# BlueGreenApp documents; `kind: Accessory` ones (issue 13) are checked by tests/test_accessory_planner.py.
SPECS = sorted(p for p in (ROOT / "specs").rglob("*.y*ml") if "\nkind: Accessory\n" not in p.read_text(encoding="utf-8"))


def test_shipped_schema_is_the_generated_one() -> None:
    shipped = json.loads(SHIPPED.read_text(encoding="utf-8"))
    assert shipped == bluegreen_schema(), (
        "controller/schema/bluegreen.schema.json is stale: regenerate it with "
        "`python -m controller --schema > controller/schema/bluegreen.schema.json`"
    )


def test_cli_schema_prints_the_shipped_file() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "controller", "--schema"], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout == SHIPPED.read_text(encoding="utf-8").rstrip("\n") + "\n"


# Both kinds of spec document: BlueGreenApp and Accessory (issue 13), each with its shipped schema.
SCHEMAS = {"BlueGreenApp": bluegreen_schema, "Accessory": accessory_schema}


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_schema_forbids_unknown_fields_everywhere(kind: str) -> None:
    schema = SCHEMAS[kind]()
    assert schema.get("additionalProperties") is False
    assert schema["$defs"], kind  # the nested objects are where a forgotten `extra="forbid"` hides
    for name, sub in schema["$defs"].items():
        if sub.get("type", "object") == "object" and "enum" not in sub:
            assert sub.get("additionalProperties") is False, f"{kind}: {name}"


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_every_field_is_documented_in_docs_spec(kind: str) -> None:
    doc = (ROOT / "docs" / "spec.md").read_text(encoding="utf-8")
    schema = SCHEMAS[kind]()
    fields = {f for sub in [schema, *schema["$defs"].values()] for f in sub.get("properties", {})}
    assert {"metadata", "spec"} <= fields, kind
    for field in sorted(fields):
        assert f"`{field}`" in doc, f"docs/spec.md does not describe field {field!r} of {kind}"


def test_there_are_example_specs() -> None:
    names = {p.relative_to(ROOT / "specs").as_posix() for p in SPECS}
    assert "dialogue.yaml" in names
    assert any(n.startswith("demo/") for n in names)


@pytest.mark.parametrize("path", SPECS, ids=[p.relative_to(ROOT).as_posix() for p in SPECS])
def test_example_spec_validates(path: Path) -> None:
    app = load_app(path)
    assert isinstance(app, BlueGreenApp)
    assert app.name == path.stem


def test_specs_in_one_directory_do_not_conflict() -> None:
    by_dir: dict[Path, list[BlueGreenApp]] = {}
    for p in SPECS:
        by_dir.setdefault(p.parent, []).append(load_app(p))
    for d, apps in by_dir.items():
        assert conflicts(apps) == [], d


def test_production_example_matches_the_issue() -> None:
    app = load_app(ROOT / "specs" / "dialogue.yaml")
    s = app.spec
    assert (s.image, s.activeColor, s.containerPort) == ("dialogue:1.4.2", "green", 8081)
    assert (s.ports.blue, s.ports.green, s.bindAddress) == (18081, 18082, "127.0.0.1")
    assert s.env == {"SPRING_PROFILES_ACTIVE": "prod"}
    assert (s.healthCheck.path, s.healthCheck.expectStatus, s.healthCheck.timeoutSeconds) == ("/actuator/health", 200, 60)
    assert s.standby == "keep"
    assert str(app.marker_path) == "/var/lib/bluegreen/dialogue/active"
    assert str(app.upstream_file) == "/etc/nginx/conf.d/dialogue.upstream.conf"
    assert s.nginx.testCommand == ["nginx", "-t"]
    assert s.nginx.reloadCommand == ["nginx", "-s", "reload"]
