"""Image pruning (spec.keepImages), the pure rule and the reconciler around it, against the in-memory world.

The real-dockerd side (kill -9 mid-prune, Docker's refusal of an image in use) is tests/test_real_pruning.py.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from controller.app.reconcile import Reconciler
from controller.app.rules.pruning import plan_pruning
from controller.kernel.errors import DockerError
from controller.kernel.imageref import local_repository as repository
from controller.store.metrics import Metrics
from controller.store.releases import Release, Releases
from controller.store.state import StateStore
from controller.world.facts import ContainerFact, ImageFact, ImagesObserved, Memory, Observed, RouteFact
from controller.world.fake import Crash, FakeImage
from controller.world.protocol import ContainerRequest
from controller.world.verification import Window
from tests.factories import make_app
from tests.fakes import CheckedWorld, reconciler, world_for
from tests.support.plans import plan_for

DAY = 86400.0


def _obs(app: str = "dialogue", **colors: ContainerFact | None) -> Observed:
    return Observed(app=app, containers={"blue": colors.get("blue"), "green": colors.get("green")}, include=None,
                    route=RouteFact(True), marker=None, at=0.0)


def _img(ref: str, created: float, *more: str) -> ImageFact:
    return ImageFact(id=f"sha256:{abs(hash((ref, created))):064x}"[:71], references=(ref, *more), created=created)


def _color(image: ImageFact) -> ContainerFact:
    return ContainerFact(name="dialogue-blue", id="c" * 64, image=image.references[0], image_id=image.id, labels={},
                         state="running", host_ip="127.0.0.1", host_port=18081)


def _ledger(*releases: tuple[str, float], seen: dict[str, float] | None = None) -> Releases:
    """Releases of (image, took traffic at), oldest first; the last one live."""
    rs = [Release(number=i + 1, revision=f"r{i}", image=img, color="blue", started_at=at, began="deploy",
                  ended="replaced" if i < len(releases) - 1 else "live") for i, (img, at) in enumerate(releases)]
    return Releases(releases=rs, seen=seen or {})


def test_keeps_the_images_of_the_n_most_recent_releases_anything_newer_and_every_protected_image() -> None:
    app = make_app(image="dialogue:9", keepImages=2)
    rel = [_img(f"dialogue:{i}", i * DAY) for i in range(1, 5)]  # released in turn: #1 .. #4 (#4 is dialogue:9's)
    next_one = _img("dialogue:5", 0.6 * DAY)  # built long ago, pulled after the newest release took traffic
    newer = _img("dialogue:6", 30 * DAY)  # built after it
    live = _img("dialogue:9", 0.5 * DAY)  # the spec's own image: old, and still never removed
    used = _img("dialogue:0", 0.1 * DAY)  # a container of another app (stopped or not) uses it
    shared = _img("dialogue:s", 0.2 * DAY, "other/repo:s")  # also another repository's
    foreign = _img("nginx:1", 0.3 * DAY)  # not this repository's
    digest_only = _img("dialogue@sha256:" + "a" * 64, 0.4 * DAY)  # pulled by digest: this repository's
    images = ImagesObserved((*rel, next_one, newer, live, used, shared, foreign, digest_only), in_use=frozenset({used.id}))
    ledger = _ledger(*((f"dialogue:{i}", (10 + i) * DAY) for i in range(1, 4)), ("dialogue:9", 20 * DAY),
                     seen={i.id: DAY for i in images.images} | {next_one.id: 21 * DAY})

    removals = plan_pruning(app, _obs(blue=_color(live)), images, ledger, verification_open=False)

    # #4 (dialogue:9) and #3 (dialogue:3) are the 2 most recent releases; :5 was seen after #4 began, :6 built after.
    assert [r.references for r in removals] == [("dialogue@sha256:" + "a" * 64,), ("dialogue:1",), ("dialogue:2",), ("dialogue:4",)]
    assert all("the image of none of the 2 most recent releases of dialogue, not new since release #4" in r.reason for r in removals)
    assert plan_pruning(app, _obs(blue=_color(live)), images, ledger, verification_open=True) == ()
    # No release recorded: none is known to be old.
    assert plan_pruning(app, _obs(blue=_color(live)), images, Releases(), verification_open=False) == ()
    # An image first seen now (not yet in the ledger's `seen`) may be the next release: kept.
    unseen = plan_pruning(app, _obs(blue=_color(live)), images, replace(ledger, seen={}), verification_open=False)
    assert ("dialogue:1",) not in [r.references for r in unseen]


def test_a_color_image_and_a_preview_image_are_never_removed() -> None:
    blue_img, green_img = _img("dialogue:1", 1.0), _img("dialogue:2", 2.0)
    newer = [_img(f"dialogue:n{i}", 10.0 + i) for i in range(3)]
    images = ImagesObserved((blue_img, green_img, *newer), in_use=frozenset())  # even when no listing shows them used
    app = make_app(image="dialogue:n0", keepImages=1)
    green = ContainerFact(name="dialogue-green", id="d" * 64, image="dialogue:2", image_id=green_img.id, labels={},
                          state="exited", host_ip=None, host_port=None)
    ledger = _ledger(("dialogue:n0", 100.0), seen=dict.fromkeys((i.id for i in images.images), 50.0))
    removals = plan_pruning(app, _obs(blue=_color(blue_img), green=green), images, ledger, verification_open=False)
    assert [r.references for r in removals] == [("dialogue:n1",), ("dialogue:n2",)]  # n0 is the spec's (and release #1's)

    # spec.preview.image (issue 12) is protected too.
    with_preview = make_app(image="dialogue:n0", keepImages=1, preview={"image": "dialogue:n1"})
    removals = plan_pruning(with_preview, _obs(blue=_color(blue_img), green=green), images, ledger, verification_open=False)
    assert [r.references for r in removals] == [("dialogue:n2",)]


def test_repository_names_as_docker_lists_them() -> None:
    assert repository("docker.io/library/dialogue:1") == repository("dialogue:2") == "dialogue"
    assert repository("registry.example.com:5000/team/app@sha256:" + "b" * 64) == "registry.example.com:5000/team/app"
    assert repository("Not A Reference") is None


def _deployed(tmp_path: Path, keep: int) -> tuple[Any, CheckedWorld, Reconciler]:
    """dialogue:1 deployed (release #1): every image is first seen in that pass, so none is pruned yet."""
    app = make_app(image="dialogue:1", keepImages=keep)
    images = {f"dialogue:{i}": FakeImage(created=float(i)) for i in range(1, 8)}
    images["dialogue:0"] = FakeImage(created=0.5)
    w = world_for(app, images=images)
    rec = reconciler(w, tmp_path / "state")
    assert rec.reconcile(app).result == "converged"
    assert w.pruned == set()
    w.clock += 60  # the next release takes traffic a minute later
    return app, w, rec


def _removed(tmp_path: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (tmp_path / "state" / "history.jsonl").read_text().splitlines()]
    return [r for r in rows if r["action"] == "RemoveImage"]


def test_a_converged_pass_prunes_and_history_records_each_removal(tmp_path: Path) -> None:
    _, w, rec = _deployed(tmp_path, keep=2)
    flip = make_app(image="dialogue:2", activeColor="green", keepImages=2)
    assert rec.reconcile(flip).result == "converged"  # release #2
    left = sorted(ref for ref in w.images if ref not in w.pruned)
    assert left == ["dialogue:1", "dialogue:2"]  # the 2 most recent releases' images; the others were seen before #2
    removed = _removed(tmp_path)
    assert [(r["image"], r["outcome"]) for r in removed] == [(f"dialogue:{i}", "ok") for i in ("0", "3", "4", "5", "6", "7")]
    assert all(r["imageId"].startswith("sha256:") and r["app"] == "dialogue" for r in removed)

    # A fixed point: the next pass removes nothing, touches nothing.
    w.mutations.clear()
    assert rec.reconcile(flip).result == "converged" and w.mutations == []
    # A removed image is only gone locally: deploying it again pulls it.
    again = make_app(image="dialogue:3", activeColor="blue", keepImages=2)
    assert rec.reconcile(again).result == "converged" and "dialogue:3" not in w.pruned


def test_the_plan_shows_what_a_converged_pass_prunes_and_nothing_while_a_window_is_open(tmp_path: Path) -> None:
    """`--plan` and the pass read `Plan.prune` from the same decide; an open verification window keeps every image
    (the rollback target stays until the verdict)."""
    app = make_app(image="dialogue:1", keepImages=2)
    w = _world(app)
    rec = reconciler(w, tmp_path / "state")
    assert rec.reconcile(app).result == "converged" and not w.pruned  # every image first seen with release #1
    ledger = rec.store.load_releases("dialogue")
    assert plan_for(app, w, images=True, releases=ledger).prune == ()
    old = replace(ledger, seen=dict.fromkeys(ledger.seen, 0.0))  # the same images, seen before release #1 began
    p = plan_for(app, w, images=True, releases=old)
    assert p.converged and [r.references for r in p.prune] == [(f"dialogue:{i}",) for i in (2, 3, 4, 5, 6, 7)]
    assert plan_for(app, w, releases=old).prune == ()  # images not gathered: nothing to prune from
    window = Window("blue", app.revision("blue"), "green", None, app.generation(), 0.0, 60.0)
    assert plan_for(app, w, Memory(verify=window), images=True, releases=old).prune == ()
    assert plan_for(app, w, Memory(verify=replace(window, state="passed")), images=True, releases=old).prune == p.prune


def _world(app: Any, world: type[CheckedWorld] = CheckedWorld) -> CheckedWorld:
    w = world(images={f"dialogue:{i}": FakeImage(created=float(i)) for i in range(1, 8)})
    w.include_paths.add(app.upstream_file)
    return w


def test_kill_mid_prune_then_the_next_pass_finishes_and_keeps_the_same_images(tmp_path: Path) -> None:
    first, app = make_app(image="dialogue:1", keepImages=2), make_app(image="dialogue:7", activeColor="green", keepImages=2)
    dry = _world(app)
    reconciler(dry, tmp_path / "dry").reconcile(first)
    dry.clock += 60
    before = len(dry.mutations)
    reconciler(dry, tmp_path / "dry").reconcile(app)
    deploy = len([m for m in dry.mutations[before:] if not m.startswith("remove image")])
    assert len(dry.mutations) - before - deploy == 5  # :2 .. :6

    w = _world(app)
    reconciler(w, tmp_path / "state").reconcile(first)
    w.clock += 60
    w.crash_after = deploy + 2  # mutations left: killed when about to remove the third image
    try:
        reconciler(w, tmp_path / "state").reconcile(app)
        raise AssertionError("not killed")
    except Crash:
        pass
    assert sorted(w.pruned) == ["dialogue:2", "dialogue:3"]
    w.crash_after = None
    assert reconciler(w, tmp_path / "state").reconcile(app).result == "converged"
    assert sorted(w.pruned) == ["dialogue:2", "dialogue:3", "dialogue:4", "dialogue:5", "dialogue:6"]  # never :1 or :7


class RacingWorld(CheckedWorld):
    """Another app's container starts on the first image pruning is about to remove (after the observation)."""

    def remove_image(self, image_id: str) -> str | None:
        if "other-blue" not in self.containers:
            ref = next(r for r in self.images if self.image_id_of(r) == image_id)
            self.create_container(ContainerRequest(name="other-blue", image=ref, labels={}, env={}, container_port=8081,
                                                   host_ip="127.0.0.1", host_port=19999))
        return super().remove_image(image_id)


def test_an_image_taken_into_use_after_the_observation_is_skipped_never_forced(tmp_path: Path) -> None:
    first, app = make_app(image="dialogue:7", keepImages=1), make_app(image="dialogue:6", activeColor="green", keepImages=1)
    w = _world(app, RacingWorld)
    rec = reconciler(w, tmp_path / "state")
    assert rec.reconcile(first).result == "converged"
    w.clock += 60
    assert rec.reconcile(app).result == "converged"  # housekeeping never fails the pass
    assert sorted(w.pruned) == ["dialogue:2", "dialogue:3", "dialogue:4", "dialogue:5"]  # :1 was refused (now in use)
    skipped = [r for r in _removed(tmp_path) if r["outcome"] == "skipped"]
    assert [r["image"] for r in skipped] == ["dialogue:1"] and "being used by running container" in skipped[0]["message"]
    # The next pass sees it in use and plans nothing for it.
    w.mutations.clear()
    assert rec.reconcile(app).result == "converged" and w.mutations == []


def test_plan_shows_what_would_be_removed_and_says_changes_are_pending(tmp_path: Path, capsys: Any) -> None:
    from controller.cli.modes import plan as _plan

    app, w, rec = _deployed(tmp_path, keep=2)
    capsys.readouterr()
    assert _plan(rec, [app], as_json=True) == 0 and json.loads(capsys.readouterr().out)[0]["prune"] == []  # all seen with #1
    # The same images, seen before release #1 took traffic (an earlier run saw them): all but #1's may go.
    ledger = rec.store.load_releases("dialogue")
    rec.store.save_releases("dialogue", replace(ledger, seen=dict.fromkeys(ledger.seen, 0.0)))
    assert _plan(rec, [app], as_json=False) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "dialogue: in sync (blue serves)"
    assert [ln.split(" (")[0] for ln in out[1:]] == [f"  - would remove image dialogue:{i}" for i in (0, 2, 3, 4, 5, 6, 7)]
    assert w.pruned == set()  # --plan changes nothing


class ListingWorld(CheckedWorld):
    """Counts the image listings (what a sweep costs a pass: Docker's image list)."""

    listings = 0

    def list_images(self) -> list[ImageFact]:
        self.listings += 1
        return super().list_images()


def test_a_pass_that_changes_nothing_sweeps_at_most_every_prune_every_seconds_one_that_changes_at_once(tmp_path: Path) -> None:
    app = make_app(image="dialogue:1", keepImages=2)
    v2 = make_app(image="dialogue:2", activeColor="green", keepImages=2)
    w = ListingWorld(images={f"dialogue:{i}": FakeImage(created=float(i)) for i in range(1, 8)})
    w.include_paths.add(app.upstream_file)
    state = StateStore(tmp_path / "state")

    def cron_run(a: Any = v2) -> str:  # a fresh reconciler, as each cron run starts one: the cadence is in the state dir
        return Reconciler(w, state, Metrics(), prune_every=3600.0).reconcile(a).result

    assert cron_run(app) == "converged"  # release #1 changed something: swept at once (every image first seen now)
    assert (w.listings, w.pruned) == (1, set())
    w.clock += 10
    assert cron_run() == "converged"  # release #2: swept at once; what was seen before it and is no release's goes
    assert (w.listings, sorted(w.pruned)) == (2, [f"dialogue:{i}" for i in range(3, 8)])
    w.images["dialogue:0"] = FakeImage(created=0.5)  # an old image appears (pulled for the next release?)
    w.clock += 3599
    assert cron_run() == "converged"  # a no-op run within the interval: no listing, nothing removed
    assert w.listings == 2
    w.clock += 1
    assert cron_run() == "converged"  # the interval passed: the sweep, the first to see dialogue:0 (kept: it is new)
    assert (w.listings, "dialogue:0" in w.pruned) == (3, False)
    assert cron_run() == "converged" and w.listings == 3  # and the next no-op run waits again

    back = make_app(image="dialogue:1", activeColor="blue", keepImages=1)
    w.clock += 60
    w.mutations.clear()
    assert cron_run(back) == "converged"  # a rollback (release #3): swept at once; dialogue:0 was seen before it
    assert w.listings == 4 and "dialogue:0" in w.pruned and any(m.startswith("write") for m in w.mutations)

    # An unreadable sweep time is a sweep due (state files: treated as absent).
    (tmp_path / "state" / "apps" / "dialogue" / "pruned.json").write_text("{torn")
    assert cron_run(back) == "converged" and w.listings == 5
    # prune_every 0 (Reconciler's default, `--prune-interval 0`): every converged pass sweeps.
    rec = Reconciler(w, state, Metrics())
    assert [rec.reconcile(back).result for _ in range(2)] == ["converged"] * 2
    assert w.listings == 7


class FailingRemoval(ListingWorld):
    def remove_image(self, image_id: str) -> str | None:
        raise DockerError("daemon went away")


def test_a_sweep_that_failed_is_due_again_on_the_next_run(tmp_path: Path) -> None:
    app = make_app(image="dialogue:1", keepImages=2)
    w = FailingRemoval(images={f"dialogue:{i}": FakeImage(created=float(i)) for i in range(1, 8)})
    w.include_paths.add(app.upstream_file)
    state = StateStore(tmp_path / "state")
    assert Reconciler(w, state, Metrics(), prune_every=3600.0).reconcile(app).result == "converged"  # release #1
    assert w.listings == 1  # swept: nothing older than release #1 to remove
    (tmp_path / "state" / "apps" / "dialogue" / "pruned.json").unlink()
    w.clock += 60
    v2 = make_app(image="dialogue:2", activeColor="green", keepImages=2)
    for expected in (2, 3):  # release #2, then a no-op run: the sweep (removals failing) is due on each
        assert Reconciler(w, state, Metrics(), prune_every=3600.0).reconcile(v2).result == "converged"  # never fails it
        assert w.listings == expected
    assert not (tmp_path / "state" / "apps" / "dialogue" / "pruned.json").exists()
