"""spec.resources and the capacity check (issue 14 items 1, 2, 6): the pure rule, the planner, the reconciler on FakeWorld.

The real-dockerd side (limits in `docker inspect`, a refusal through BLUEGREEN_MEMINFO) is tests/test_real_limits.py.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from controller.app.decide import decide
from controller.app.plan import Plan
from controller.app.rules.capacity import DISK_HEADROOM, HEADROOM_MIN, headroom
from controller.app.status import render_text
from controller.kernel.errors import HostError, SpecError
from controller.spec.app import BlueGreenApp, parse_app
from controller.spec.resources import GIB, MIB, parse_size
from controller.store.documents import STATUS
from controller.world.actions import CreateContainer
from controller.world.facts import CapacityFact, Observed
from controller.world.fake import FakeImage, FakeWorld
from controller.world.protocol import ContainerRequest
from tests.factories import app_doc, make_app
from tests.fakes import CheckedWorld, reconciler, world_for
from tests.support.plans import inputs_for


def cap(**kw: Any) -> CapacityFact:
    base: dict[str, Any] = {"mem_total": 4 * GIB, "mem_available": 3 * GIB, "meminfo": "/proc/meminfo", "cpus": 2}
    return CapacityFact(**{**base, **kw})


def deployed(app: BlueGreenApp, tmp_path: Path) -> CheckedWorld:
    """Blue serves dialogue:1 (no limits); the caller then asks for green."""
    w = world_for(app)
    assert reconciler(w, tmp_path / "state").reconcile(app).result == "converged"
    return w


def green(**spec: Any) -> BlueGreenApp:
    return make_app(image="dialogue:2", activeColor="green", **spec)


def planned(app: BlueGreenApp, w: FakeWorld, capacity: CapacityFact | None) -> tuple[Plan, Observed]:
    """The plan of `app` on `w`, decided on the host figures `capacity` (whatever gathering read)."""
    inputs = inputs_for(app, w)
    obs = replace(inputs.observed, capacity=capacity)
    return decide(replace(inputs, observed=obs)), obs


def verbs(p: Plan) -> list[str]:
    return [f"{a.verb}:{a.color}" for a in p.actions] + [f"!{b.reason}" for b in p.blockers]


# ------------------------------------------------------------------------------------------- the rule


def test_headroom_is_a_tenth_of_memtotal_at_least_256_mib() -> None:
    assert headroom(1 * GIB) == HEADROOM_MIN == 256 * MIB
    assert headroom(16 * GIB) == int(1.6 * GIB)


def test_a_limit_that_does_not_fit_blocks_with_the_figures_and_starts_nothing(tmp_path: Path) -> None:
    app = make_app()
    w = deployed(app, tmp_path)
    want = green(resources={"memory": "1g"})
    # 1 GiB available - 409.6 MiB headroom (10 % of 4 GiB) leaves 614 MiB: a 1 GiB limit does not fit.
    p, _ = planned(want, w, cap(mem_available=1 * GIB))
    assert verbs(p) == ["!InsufficientCapacity"]
    msg = p.blockers[0].message
    for figure in ("1 GiB (its memory limit)", "614 MiB", "MemAvailable 1 GiB in /proc/meminfo", "410 MiB headroom", "blue keeps serving"):
        assert figure in msg, msg
    assert "skipCapacityCheck" in msg
    assert p.target == "blue"  # traffic stays where it is

    fits, _ = planned(want, w, cap(mem_available=2 * GIB))
    assert verbs(fits)[:2] == ["CreateContainer:green", "WaitHealthy:green"]
    create = fits.actions[0]
    assert isinstance(create, CreateContainer) and "memory=1g" in create.reason  # --plan shows the limits


def test_without_a_limit_the_live_colors_usage_is_what_it_may_need(tmp_path: Path) -> None:
    app = make_app()
    w = deployed(app, tmp_path)
    want = green()
    live = app.container_name("blue")
    # 600 MiB free - 256 MiB headroom = 344 MiB < the 400 MiB blue uses now.
    small = cap(mem_total=2 * GIB, mem_available=600 * MIB, usage={live: 400 * MIB})
    p, _ = planned(want, w, small)
    assert verbs(p) == ["!InsufficientCapacity"]
    assert "400 MiB (what blue uses now, no limit set)" in p.blockers[0].message
    roomy, _ = planned(want, w, replace(small, usage={live: 300 * MIB}))
    assert verbs(roomy)[0] == "CreateContainer:green"
    # No limit and nothing serving to measure: no memory figure to check against.
    unknown, _ = planned(want, w, replace(small, usage={}))
    assert verbs(unknown)[0] == "CreateContainer:green"


def test_what_the_replaced_container_uses_comes_free(tmp_path: Path) -> None:
    """standby: keep leaves green running the release before last; deploying over it removes it first."""
    app = make_app()
    w = deployed(app, tmp_path)
    assert reconciler(w, tmp_path / "state").reconcile(green()).result == "converged"
    back = make_app(image="dialogue:1", activeColor="blue")  # blue still runs it: a rollback, nothing starts
    assert reconciler(w, tmp_path / "state").reconcile(back).result == "converged"
    want = make_app(image="dialogue:3", activeColor="green", resources={"memory": "512m"})
    w.images["dialogue:3"] = FakeImage()
    old = want.container_name("green")
    # 400 MiB free + 300 MiB used by the old green - 256 MiB = 444 MiB < 512 MiB: refused ...
    tight = cap(mem_total=2 * GIB, mem_available=400 * MIB, usage={old: 300 * MIB})
    p, _ = planned(want, w, tight)
    assert verbs(p) == ["!InsufficientCapacity"]
    assert "300 MiB used by the green container it replaces" in p.blockers[0].message
    # ... and 400 MiB used by it makes 544 MiB: it fits once the old one is gone.
    p, _ = planned(want, w, replace(tight, usage={old: 400 * MIB}))
    assert verbs(p)[:2] == ["RemoveContainer:green", "CreateContainer:green"]


def test_never_for_the_live_color(tmp_path: Path) -> None:
    """The serving container removed by hand: it is recreated, whatever the host has."""
    app = make_app(resources={"memory": "1g"})
    w = world_for(app)
    assert reconciler(w, tmp_path / "state").reconcile(app).result == "converged"
    w.remove_container(app.container_name("blue"))
    p, _ = planned(app, w, cap(mem_available=0))
    assert "CreateContainer:blue" in verbs(p) and not p.blockers


def test_skip_capacity_check_is_the_override(tmp_path: Path) -> None:
    app = make_app()
    w = deployed(app, tmp_path)
    want = green(resources={"memory": "1g", "skipCapacityCheck": True})
    p, _ = planned(want, w, cap(mem_available=0, image_present=False, disk_free=0))
    assert verbs(p)[0] == "CreateContainer:green"


def test_disk_is_checked_only_when_the_image_must_be_pulled(tmp_path: Path) -> None:
    app = make_app()
    w = deployed(app, tmp_path)
    want = green()
    need = 300 * MIB + DISK_HEADROOM
    short = cap(image_present=False, image_size=300 * MIB, disk_free=need - 1, docker_root="/var/lib/docker")
    p, _ = planned(want, w, short)
    assert verbs(p) == ["!InsufficientCapacity"]
    assert "disk: pulling dialogue:2 needs 1.3 GiB (the live image's 300 MiB + 1 GiB) free under /var/lib/docker" in p.blockers[0].message
    assert verbs(planned(want, w, replace(short, disk_free=need))[0])[0] == "CreateContainer:green"
    assert verbs(planned(want, w, replace(short, image_present=True))[0])[0] == "CreateContainer:green"
    # Docker's root not visible here (a remote daemon): that part is not checked.
    assert verbs(planned(want, w, replace(short, disk_free=None))[0])[0] == "CreateContainer:green"


def test_more_cpus_than_docker_sees_is_refused_before_docker_refuses_it(tmp_path: Path) -> None:
    app = make_app()
    w = deployed(app, tmp_path)
    p, _ = planned(green(resources={"cpus": 4}), w, cap(cpus=2))
    assert verbs(p) == ["!InsufficientCapacity"]
    assert "cpus: 4 wanted, Docker sees 2 CPUs" in p.blockers[0].message


def test_not_observed_means_not_checked(tmp_path: Path) -> None:
    app = make_app()
    w = deployed(app, tmp_path)
    p, _ = planned(green(resources={"memory": "1g"}), w, None)
    assert verbs(p)[0] == "CreateContainer:green"


# --------------------------------------------------------------------------- observation and the reconciler


class CountingWorld(CheckedWorld):
    asked: int = 0

    def host_capacity(self, image: str, measure: tuple[str, ...], size_of: str | None) -> CapacityFact:
        self.asked += 1
        return super().host_capacity(image, measure, size_of)


def test_capacity_is_observed_only_when_a_new_color_would_start(tmp_path: Path) -> None:
    app = make_app()
    w = CountingWorld(images={"dialogue:1": FakeImage(), "dialogue:2": FakeImage()})
    w.include_paths.add(app.upstream_file)
    rec = reconciler(w, tmp_path / "state")
    assert rec.reconcile(app).result == "converged"
    assert w.asked == 1  # the first deploy
    assert rec.reconcile(app).result == "converged" and w.asked == 1  # no-op pass: nothing more asked
    assert rec.reconcile(green(resources={"skipCapacityCheck": True})).result == "converged"
    assert w.asked == 1  # the override asks nothing


def test_the_reconciler_refuses_leaves_blue_serving_and_creates_nothing(tmp_path: Path) -> None:
    app = make_app()
    w = deployed(app, tmp_path)
    w.mem_total, w.mem_available = 2 * GIB, 700 * MIB
    before = dict(w.containers)
    mutations = len(w.mutations)
    rec = reconciler(w, tmp_path / "state")
    want = green(resources={"memory": "512m"})
    r = rec.reconcile(want)
    assert r.result == "degraded" and r.plan is not None
    assert [b.reason for b in r.plan.blockers] == ["InsufficientCapacity"]
    assert r.status is not None and r.status.condition("Degraded") is not None
    assert r.status.is_true("Degraded") and r.status.condition("Degraded").reason == "InsufficientCapacity"  # type: ignore[union-attr]
    assert w.containers == before and len(w.mutations) == mutations  # nothing started, nothing written
    assert "limits    memory=512m" in render_text(r.status)  # --status shows the limits
    assert STATUS.dump(r.status)["desired"]["resources"] == {"memory": "512m"}
    assert STATUS.parse(STATUS.text(r.status)) == r.status  # status.json reads back
    assert w.routed("dialogue") == ["127.0.0.1:18081"]
    # --plan says the same, with the figures.
    p, obs, _ = rec.plan_only(want)
    assert [b.reason for b in p.blockers] == ["InsufficientCapacity"] and obs.capacity is not None
    # Memory freed: the next pass deploys, with the limits on the request.
    w.mem_available = 2 * GIB
    assert rec.reconcile(want).result == "converged"
    req = w.containers[want.container_name("green")].request
    assert isinstance(req, ContainerRequest) and req.memory == 512 * MIB and req.nano_cpus is None


def test_an_unreadable_meminfo_fails_the_pass_and_starts_nothing(tmp_path: Path) -> None:
    app = make_app()
    w = deployed(app, tmp_path)
    w.meminfo_missing = True
    before = dict(w.containers)
    r = reconciler(w, tmp_path / "state").reconcile(green())
    assert r.result == "error" and r.error is not None and "meminfo" in r.error
    assert w.containers == before
    with pytest.raises(HostError):
        w.host_capacity("dialogue:2", (), None)


def test_a_pass_that_starts_nothing_asks_the_host_nothing_more(tmp_path: Path) -> None:
    app = make_app()
    w = deployed(app, tmp_path)
    w.meminfo_missing = True  # reading the host's figures would fail the pass
    inputs = inputs_for(app, w)
    assert inputs.observed.capacity is None and decide(inputs).converged
    w.meminfo_missing = False  # a deploy of a new color reads them: once, before the plan is decided
    starts = inputs_for(green(), w)
    assert starts.observed.capacity is not None and decide(starts).actions[0].verb == "CreateContainer"


# ------------------------------------------------------------------------------------------- the spec


def test_limits_are_part_of_the_revision_and_only_when_set() -> None:
    plain = make_app()
    assert make_app(resources={"skipCapacityCheck": True}).revision("blue") == plain.revision("blue")  # no redeploy
    one_g = make_app(resources={"memory": "1g"})
    assert one_g.revision("blue") != plain.revision("blue")
    assert make_app(resources={"memory": "1024m"}).revision("blue") == one_g.revision("blue")  # same bytes
    assert make_app(resources={"memory": "1G"}).revision("blue") == one_g.revision("blue")
    assert make_app(resources={"memory": "1g", "cpus": 1.5}).revision("blue") != one_g.revision("blue")
    assert make_app(resources={"pidsLimit": 100}).revision("blue") != plain.revision("blue")


@pytest.mark.parametrize(
    ("text", "size"),
    [("6m", 6 * MIB), ("512M", 512 * MIB), ("1g", GIB), ("1G", GIB), ("1048576k", GIB), ("1024g", 1024 * GIB)],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text, "memory") == size


BAD = [
    ({"memory": "1x"}, "spec.resources.memory: memory '1x' is not a size"),
    ({"memory": "1.5g"}, "is not a size"),
    ({"memory": "1gb"}, "is not a size"),
    ({"memory": "-1g"}, "is not a size"),
    ({"memory": " 1g"}, "is not a size"),
    ({"memory": "0m"}, "must be more than 0"),
    ({"memory": "1k"}, "below Docker's minimum of 6m"),
    ({"memory": "1025g"}, "more than 1024g"),
    ({"memory": "99999999999g"}, "more than 1024g"),
    ({"memory": "9999999999999999g"}, "is not a size"),
    ({"memory": 1024}, "has no unit"),
    ({"memory": True}, "must be a size"),
    ({"memory": "512m", "memoryReservation": "1g"}, "memoryReservation 1g is more than memory 512m"),
    ({"cpus": -1}, "cpus -1 is out of range"),
    ({"cpus": 0}, "out of range"),
    ({"cpus": 2000}, "out of range"),
    ({"cpus": 0.001}, "out of range"),
    ({"cpus": 1.555}, "more than two decimals"),
    ({"cpus": "1.5"}, "must be a number"),
    ({"cpus": True}, "must be a number"),
    ({"pidsLimit": 0}, "pidsLimit"),
    ({"pidsLimit": -1}, "pidsLimit"),
    ({"pidsLimit": 10**9}, "pidsLimit"),
    ({"pidsLimit": 1.5}, "pidsLimit must be a whole number"),
    ({"skipCapacityCheck": "yes"}, "skipCapacityCheck"),
    ({"memroy": "1g"}, "spec.resources.memroy: unknown field"),
]


@pytest.mark.parametrize(("resources", "needle"), BAD, ids=[str(r) for r, _ in BAD])
def test_bad_resources_are_one_line_naming_the_field(resources: dict[str, Any], needle: str) -> None:
    import yaml

    text = yaml.safe_dump(app_doc(resources=resources))
    with pytest.raises(SpecError) as e:
        parse_app(text, "x.yaml")
    msg = str(e.value)
    assert "\n" not in msg and "spec.resources" in msg and needle in msg, msg


def test_good_resources_parse() -> None:
    app = make_app(resources={"memory": "1g", "memoryReservation": "512m", "cpus": 1.5, "pidsLimit": 200})
    r = app.spec.resources
    assert r is not None
    assert (r.memory_bytes, r.reservation_bytes, r.nano_cpus, r.pidsLimit) == (GIB, 512 * MIB, 1_500_000_000, 200)
    assert r.describe() == "memory=1g memoryReservation=512m cpus=1.5 pidsLimit=200"
    assert make_app(resources={"cpus": 2}).spec.resources.nano_cpus == 2 * 10**9  # type: ignore[union-attr]
