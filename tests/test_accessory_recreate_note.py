"""`--plan` says plainly what `update: recreate` means for an accessory's data (issue 13, item 7).

No volumes: recreating loses no data, flagged as fine. Volumes with a backup: kept, backup first. Volumes
without a backup: a warning. An image that declares `VOLUME /data` without spec.volumes (redis, mongo, qdrant):
never "loses no data"; the anonymous volume is named and kept. Pure planner and its text/JSON rendering, on
the in-memory world (`controller.world.fake.FakeWorld`; on real Docker: tests/test_real_accessories.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller.accessory.reconcile import AccessoryRunner, plan_json, render_plan
from controller.spec.accessory import Accessory
from controller.store.state import StateStore
from controller.world.fake import FakeImage, FakeWorld


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


def test_an_image_volume_is_named_in_the_note_never_loses_no_data(tmp_path: Path) -> None:
    w = FakeWorld(images={img: FakeImage(volumes=("/data",)) for img in ("redis:7.2", "redis:7.4")})
    run = AccessoryRunner(w, StateStore(tmp_path / "state"))
    # Before any container: the image's VOLUME is named.
    fresh = accessory(update="recreate", backup={"command": ["true"]})
    (note,) = run.plan(fresh).notes
    assert note == (
        "update: recreate keeps the anonymous volume of the image's VOLUME /data "
        "(never removed; anonymous ones mounted again at the same paths); the backup command runs first and must succeed"
    )
    assert run.reconcile(accessory()).converged  # created with update: manual
    (anon,) = w.containers["redis"].mounts
    changed = accessory(image="redis:7.4", update="recreate")
    p = run.plan(changed)
    (note,) = p.notes
    assert note.startswith(f"warning: update: recreate with anonymous volume {anon[:12]} at /data and no backup command: the volumes are kept")
    assert "loses no data" not in render_plan(p) and f"with anonymous volumes {anon[:12]} at /data" in render_plan(p)
    assert {"action": "CreateAccessory", "target": "redis", "reason": f"recreate from redis:7.4, with anonymous volumes {anon[:12]} at /data",
            "keep": {anon: "/data"}} in plan_json(p)["actions"]  # fmt: skip
    # spec.volumes now mounts a named volume at /data: the anonymous one is not mounted again, and --plan says so.
    (note,) = run.plan(accessory(update="recreate", volumes={"redis-data": "/data"})).notes
    assert note.endswith(f"; warning: anonymous volume {anon[:12]} at /data is replaced by volume redis-data (its data stays in it, not copied)")


def test_an_image_not_present_locally_is_said_so() -> None:
    w = FakeWorld()
    run = AccessoryRunner(w, StateStore(Path("/nonexistent-state-never-written")))
    (note,) = run.plan(accessory(update="recreate", image="redis:9")).notes
    assert note == (
        "update: recreate is fine: redis has no volumes, so recreating it loses no data "
        "(image redis:9 is not present locally: a VOLUME it declares shows once it is pulled)"
    )
