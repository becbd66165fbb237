"""Image pruning (`spec.keepImages`): after a converged pass, remove images of the app's repository that
no container uses, keeping the N most recent and never one a color, any container or the spec names.

Three parts, the same shape as a pass: `observe_images` reads (two daemon calls; `gather` calls it),
`rules/pruning.plan_pruning` is pure (observed facts in, removals out: `Plan.prune`) and `prune` gives the
removals effect, oldest first. Nothing is remembered between passes: a pass killed half-way through leaves
fewer images, and the next pass plans again from what it observes. Removing the oldest first never changes which images are the N most
recent, so a re-plan keeps the same ones. Removal is by image id and never forced: Docker refuses (and
the image stays) when a container started meanwhile uses it or another repository names it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from controller.kernel.errors import ControllerError
from controller.world.actions import ImageRemoval
from controller.world.facts import ImagesObserved
from controller.world.protocol import World

# ---------------------------------------------------------------------------------------------- observe


def observe_images(world: World) -> ImagesObserved:
    """Containers after images: an image a container created in between is then seen as in use."""
    images = tuple(world.list_images())
    return ImagesObserved(images=images, in_use=world.image_ids_in_use())


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
