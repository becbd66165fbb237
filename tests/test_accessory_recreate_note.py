"""`--plan` says plainly what `update: recreate` means for an accessory's data (issue 13, item 7).

No volumes: recreating loses no data, flagged as fine. Volumes with a backup: kept, backup first. Volumes
without a backup: a warning. Pure planner and its text/JSON rendering, on the in-memory world (`controller.testing.FakeWorld`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller.accessory import Accessory
from controller.accessory_reconcile import AccessoryRunner, plan_json, render_plan
from controller.state import StateStore
from controller.testing import FakeImage, FakeWorld


def accessory(**spec: Any) -> Accessory:
    body: dict[str, Any] = {"image": "redis:7.2", "ports": {"6379": 16379}, "healthCheck": {"tcp": 6379}}
    body.update(spec)
    return Accessory.model_validate({"apiVersion": "bluegreen/v1", "kind": "Accessory", "metadata": {"name": "redis"}, "spec": body})


CASES: dict[str, tuple[dict[str, Any], str | None]] = {
    "no-volumes": ({"update": "recreate"}, "update: recreate is fine: redis has no volumes, so recreating it loses no data"),
    "backup": (
        {"update": "recreate", "volumes": {"redis-data": "/data"}, "backup": {"command": ["true"]}},
        "update: recreate keeps volumes redis-data (never removed); the backup command runs first and must succeed",
    ),
    "no-backup": (
        {"update": "recreate", "volumes": {"redis-data": "/data"}},
        "warning: update: recreate with volumes redis-data and no backup command",
    ),
    "manual": ({"volumes": {"redis-data": "/data"}}, None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_plan_says_what_a_recreate_does_to_data(tmp_path: Path, case: str) -> None:
    spec, expected = CASES[case]
    w = FakeWorld(images={"redis:7.2": FakeImage(execs={("true",): (0, "")}), "redis:7.4": FakeImage()})
    run = AccessoryRunner(w, StateStore(tmp_path / "state"))
    first = accessory(**spec)
    assert run.reconcile(first).converged
    # Both an out-of-date plan (the recreate about to happen) and an in-sync one carry the note.
    changed = accessory(**{**spec, "image": "redis:7.4"})
    for acc in (changed, first):
        p = run.plan(acc, run._index([acc.name]))
        text, rows = render_plan(p), plan_json(p)["notes"]
        if expected is None:
            assert rows == [] and "note:" not in text
        else:
            (note,) = rows
            assert note.startswith(expected)
            assert f"\n  note: {note}" in text
    if case == "no-backup":
        assert "nothing is backed up" in plan_json(p)["notes"][0]
