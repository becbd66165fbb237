"""Image pruning (`spec.keepImages`): after a converged pass, remove images of the app's repository that
no container uses, keeping the images of the N most recent releases (controller/releases.py) and any image
that may be the next one, and never one a color, any container or the spec names.

Three parts, the same shape as a pass: `observe_images` reads (two daemon calls), `plan_pruning` is pure
(observed facts and the release ledger in, removals out) and `prune` gives the removals effect, oldest first.
A pass killed half-way through leaves fewer images, and the next pass plans again from what it observes:
which images are kept depends on the releases, not on which others are left. Removal is by image id and
never forced: Docker refuses (and the image stays) when a container started meanwhile uses it or another
repository names it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from controller.errors import ControllerError
from controller.facts import ImagesObserved, Observed
from controller.imageref import ImageRef, InvalidImageRef
from controller.releases import Releases, keep_reason
from controller.spec import BlueGreenApp
from controller.world import World

_DOCKER_HUB = (None, "docker.io", "index.docker.io", "registry-1.docker.io")


@dataclass(frozen=True)
class ImageRemoval:
    image_id: str
    references: tuple[str, ...]
    created: float
    reason: str

    def describe(self) -> str:
        return f"RemoveImage({', '.join(self.references)} {self.image_id[:19]}): {self.reason}"


def repository(reference: str) -> str | None:
    """The repository a reference names, as Docker shows it (`docker.io/library/x` is `x`); None if unparsable."""
    try:
        ref = ImageRef.parse(reference)
    except InvalidImageRef:
        return None
    if ref.registry in _DOCKER_HUB:
        return ref.path.removeprefix("library/")
    return ref.repository


def _names(reference: str) -> set[str]:
    """The names under which Docker lists the image `reference` means (`x` is `x:latest`; a digest its own)."""
    try:
        ref = ImageRef.parse(reference)
    except InvalidImageRef:
        return set()
    repo = repository(reference)
    out = set()
    if ref.digest:
        out.add(f"{repo}@{ref.digest}")
    if ref.tag or not ref.digest:
        out.add(f"{repo}:{ref.tag or 'latest'}")
    return out


def protected_references(app: BlueGreenApp) -> set[str]:
    """The images the spec names: its own and, where the spec has one, its preview's."""
    names = _names(app.spec.image)
    preview = getattr(app.spec, "preview", None)  # spec.preview.image (issue 12), when this version has it
    preview_image = getattr(preview, "image", None)
    if isinstance(preview_image, str):
        names |= _names(preview_image)
    return names


# ---------------------------------------------------------------------------------------------- observe


def observe_images(world: World) -> ImagesObserved:
    """Containers after images: an image a container created in between is then seen as in use."""
    images = tuple(world.list_images())
    return ImagesObserved(images=images, in_use=world.image_ids_in_use())


def repository_image_ids(app: BlueGreenApp, images: ImagesObserved) -> list[str]:
    """The ids of the local images of the app's repository (the ledger notes when each was first seen)."""
    repo = repository(app.spec.image)
    return [img.id for img in images.images if repo in {repository(r) for r in img.references}]


# ---------------------------------------------------------------------------------------------- plan (pure)


def plan_pruning(
    app: BlueGreenApp, obs: Observed, images: ImagesObserved, ledger: Releases, *, verification_open: bool = False
) -> tuple[ImageRemoval, ...]:
    """The images to remove, oldest first. Called only for a converged plan.

    `verification_open`: a post-switch verification window is still open (the rollback target must stay):
    nothing is removed until it closes. It is the one hook for that; False keeps pruning as it is.
    """
    if verification_open:
        return ()
    repo = repository(app.spec.image)
    keep_names = protected_references(app)
    colors = {c.image_id for c in obs.containers.values() if c is not None and c.image_id}
    n = app.spec.keepImages
    out: list[ImageRemoval] = []
    for img in sorted(images.images, key=lambda i: (i.created, i.id)):
        repos = {repository(r) for r in img.references}
        if repos != {repo}:
            continue  # not this repository's, or also another's (or a name we cannot read): not ours alone
        if img.id in images.in_use or img.id in colors or keep_names & set(img.references):
            continue
        if keep_reason(ledger, n, img.id, img.references, img.created) is not None:
            continue
        reason = (
            f"created {_iso(img.created)}, used by no container, the image of none of the {n} most recent release"
            f"{'s' if n != 1 else ''} of {app.name}, not new since release #{ledger.releases[-1].number} took traffic"
        )
        out.append(ImageRemoval(image_id=img.id, references=tuple(sorted(img.references)), created=img.created, reason=reason))
    return tuple(out)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------- apply


def prune(
    world: World,
    removals: tuple[ImageRemoval, ...],
    *,
    record: Callable[[ImageRemoval, str, str], None],
    should_stop: Callable[[], bool],
    log: Any,
) -> list[str]:
    """Remove each image, oldest first; `record(removal, outcome, message)` for each (history). Returns what
    was removed. Housekeeping never fails the pass: an error stops pruning, the next pass plans again."""
    done: list[str] = []
    for r in removals:
        if should_stop():
            break
        try:
            refused = world.remove_image(r.image_id)
        except ControllerError as e:
            log.warning("image.prune_failed", image_id=r.image_id, references=list(r.references), error=str(e))
            record(r, "failed", str(e))
            break
        if refused is not None:
            log.info("image.prune_skipped", image_id=r.image_id, references=list(r.references), reason=refused)
            record(r, "skipped", refused)
            continue
        log.info("image.removed", image_id=r.image_id, references=list(r.references))
        record(r, "ok", r.reason)
        done.append(r.describe())
    return done
