"""Build specs for tests without YAML boilerplate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from controller.spec.app import BlueGreenApp


def app_doc(name: str = "dialogue", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "image": "dialogue:1",
        "activeColor": "blue",
        "ports": {"blue": 18081, "green": 18082},
        "healthCheck": {"intervalSeconds": 1, "timeoutSeconds": 10},
        "marker": f"/state/{name}/active",
        "nginx": {"upstreamFile": f"/nginx/{name}.upstream.conf"},
    }
    for k, v in spec.items():
        if isinstance(v, dict) and isinstance(body.get(k), dict):
            body[k] = {**body[k], **v}
        else:
            body[k] = v
    return {"apiVersion": "bluegreen/v1", "kind": "BlueGreenApp", "metadata": {"name": name}, "spec": body}


def make_app(name: str = "dialogue", **spec: Any) -> BlueGreenApp:
    return BlueGreenApp.model_validate(app_doc(name, **spec))


def write_spec(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path
