"""The pruning rule (`spec.keepImages`): which images of the app's repository a converged pass removes. Pure.

Images that no container uses go, keeping the images of the N most recent releases and any image that may be the
next one (controller/store/releases.py `keep_reason`), and never one a color, any container or the spec names.
Observing the images and removing them: controller/app/steps/prune.py.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

from controller.kernel.imageref import local_names, local_repository
from controller.store.releases import Releases, keep_reason
from controller.world.actions import ImageRemoval
from controller.world.facts import ImagesObserved, Observed

if TYPE_CHECKING:  # the models load with the first spec validated (none on a spec-cache hit)
    from controller.spec.app import BlueGreenApp


def protected_references(app: BlueGreenApp) -> set[str]:
    """The images the spec names: its own and, where the spec has one, its preview's."""
    names = local_names(app.spec.image)
    if app.spec.preview is not None:
        names |= local_names(app.spec.preview.image)
    return names


def plan_pruning(
    app: BlueGreenApp, obs: Observed, images: ImagesObserved, releases: Releases, *, verification_open: bool
) -> tuple[ImageRemoval, ...]:
    """The images to remove, oldest first. Composed only into a converged plan (decide.py).

    `verification_open`: a post-switch verification window is still open (the rollback target must stay):
    nothing is removed until it closes.
    """
    if verification_open:
        return ()
    repo = local_repository(app.spec.image)
    keep_names = protected_references(app)
    colors = {c.image_id for c in obs.containers.values() if c is not None and c.image_id}
    n = app.spec.keepImages
    out: list[ImageRemoval] = []
    for img in sorted(images.images, key=lambda i: (i.created, i.id)):
        repos = {local_repository(r) for r in img.references}
        if repos != {repo}:
            continue  # not this repository's, or also another's (or a name we cannot read): not ours alone
        if img.id in images.in_use or img.id in colors or keep_names & set(img.references):
            continue
        if keep_reason(releases, n, img.id, img.references, img.created) is not None:
            continue
        reason = (
            f"created {_iso(img.created)}, used by no container, the image of none of the {n} most recent release"
            f"{'s' if n != 1 else ''} of {app.name}, not new since release #{releases.releases[-1].number} took traffic"
        )
        out.append(ImageRemoval(image_id=img.id, references=tuple(sorted(img.references)), created=img.created, reason=reason))
    return tuple(out)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
