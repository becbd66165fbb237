"""Bad spec.preview input through the real CLI: exit 2, one line naming the field, nothing changed (issue 12 item 5)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.kernel.errors import SpecError
from controller.spec.app import parse_app
from tests.factories import app_doc
from tests.test_bad_input import Case, Env, _run

Doc = dict[str, Any]


def _preview(preview: Any, **spec: Any) -> Any:
    def setup(e: Env) -> Path:
        d = e.doc(**spec)
        d["spec"]["preview"] = preview
        return e.write(d)

    return setup


CASES = [
    Case("same-image", _preview({"image": "bgtest:v1"}), ["spec: preview.image bgtest:v1 is the live image (bgtest:v1)"], mode="--plan"),
    Case("unknown-field", _preview({"image": "bgtest:v2", "replicas": 2}), ["spec.preview.replicas: unknown field"]),
    Case(
        "reload-mode",
        lambda e: e.write(
            {**(d := e.doc(preview={"image": "bgtest:v2"})), "spec": {**d["spec"], "nginx": {**d["spec"]["nginx"], "switch": "reload"}}}
        ),
        ["spec: preview needs nginx.switch: flag"],
    ),
]

# The same rules without a process each (the CLI's path from SpecError to one line is the one above).
UNIT = [
    ({"imag": "bgtest:v2"}, "spec.preview.image: required field missing; spec.preview.imag: unknown field"),
    ({"image": "BG Test"}, "spec.preview.image: 'BG Test' is not a valid image reference"),
    ({"image": "bgtest:v2", "env": {"BLUEGREEN_COLOR": "x"}}, "spec.preview.env: BLUEGREEN_COLOR is reserved"),
    ({"image": "bgtest:v2", "env": {"A": None}}, "spec.preview.env: env A has no value"),
    ({"image": "bgtest:v2", "env": {"1A": "x"}}, "spec.preview.env: '1A' is not a valid environment variable name"),
    ("bgtest:v2", "spec.preview: Input should be a valid dictionary"),
    ({"image": "bgtest:v1", "env": {"A": "changed"}}, "is the live image"),  # env alone makes no other release
]


@pytest.mark.parametrize(("preview", "needle"), UNIT, ids=[str(i) for i in range(len(UNIT))])
def test_bad_preview_spec(preview: Any, needle: str) -> None:
    doc = app_doc(image="bgtest:v1", preview=preview)
    with pytest.raises(SpecError) as err:
        parse_app(yaml.safe_dump(doc), "x.yaml")
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_good_preview_spec() -> None:
    app = parse_app(yaml.safe_dump(app_doc(image="bgtest:v1", env={"A": "1"}, preview={"image": "bgtest:v2", "env": {"B": 2}})), "x")
    assert app.spec.preview is not None and app.spec.preview.env == {"B": "2"}
    assert app.preview_flag_file == Path("/nginx/dialogue.green.preview")


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Env, Any]]]:
    root = tmp_path_factory.mktemp("preview-input")
    prepared = []
    for c in CASES:
        e = Env(root / c.id, f"t{uuid.uuid4().hex[:8]}")
        e.tmp.mkdir()
        prepared.append((c, e, c.setup(e)))
    with ThreadPoolExecutor(max_workers=4) as pool:
        procs = list(pool.map(lambda args: _run(*args), prepared))
    yield {c.id: (e, p) for (c, e, _), p in zip(prepared, procs, strict=True)}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_preview_input(case: Case, ran: dict[str, tuple[Env, Any]], docker_client: Any) -> None:
    e, p = ran[case.id]
    assert "Traceback" not in p.stdout + p.stderr
    problems = [ln for ln in p.stderr.splitlines() if not (ln.startswith("{") and json.loads(ln))]
    assert len(problems) == 1, p.stderr
    assert problems[0].startswith("reconcile: ") and case.needles[0].lower() in problems[0].lower(), problems[0]
    assert p.returncode == 2, p.stderr
    # Nothing changed: no container, no include, marker or preview flag, no state.
    assert docker_client.containers.list(all=True, filters={"label": f"bluegreen.app={e.name}"}) == []
    assert not (e.tmp / "nginx").exists() and not (e.tmp / "run").exists()
    assert not e.state.exists() or [x.name for x in e.state.rglob("*")] in ([], ["lock"])
