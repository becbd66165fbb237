"""The capacity rule: the check before a new color starts (issue 14). Pure: the host's figures are a gathered fact.

While both colors run a release costs twice its memory; starting the second one on a host that cannot
hold it pushes the host into swap or the OOM killer, which may pick the *live* color. So before a color
that does not serve is created or started (never the live one: repairing it is never refused), `decide` asks
`capacity_blocker` (the figures are gathered only then: `decide.needs_capacity`, `gather.gather`):

- memory: what the new color may need — its `resources.memory` limit, else what the live color uses now —
  must fit in MemAvailable, plus what the container it replaces uses now (removed first), minus a headroom
  of 10 % of MemTotal, at least 256 MiB (the kernel, page cache, the live color's own growth);
- CPUs: `resources.cpus` not above the CPUs Docker sees (Docker would refuse the container anyway);
- disk, only when the image must be pulled: free space under Docker's root dir at least the live color's
  image size (the estimate of the new one) plus 1 GiB.

Not enough → blocker `InsufficientCapacity` with the figures; nothing starts and the live color is untouched.
`resources.skipCapacityCheck: true` is the override (docs/operations.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from controller.spec.base import GIB, MIB, Color, human
from controller.world.actions import Blocker
from controller.world.facts import CapacityFact, ContainerFact

if TYPE_CHECKING:  # the models load with the first spec validated (none on a spec-cache hit)
    from controller.spec.app import BlueGreenApp

HEADROOM_MIN = 256 * MIB
HEADROOM_FRACTION = 0.10
DISK_HEADROOM = 1 * GIB


def headroom(mem_total: int) -> int:
    """Memory kept free for everything but the new color."""
    return max(HEADROOM_MIN, int(mem_total * HEADROOM_FRACTION))


def skipped(app: BlueGreenApp) -> bool:
    return app.spec.resources is not None and app.spec.resources.skipCapacityCheck


def capacity_blocker(
    app: BlueGreenApp, cap: CapacityFact | None, color: Color, serving: Color | None, live: ContainerFact | None
) -> Blocker | None:
    """`InsufficientCapacity` when `color` (about to be created or started) does not fit on the host; else None.

    `cap` None means not gathered (the pass starts no new color, or a preview's: see decide.needs_capacity).
    `live` is the serving color's container, whose current usage stands in for a missing memory limit.
    """
    if cap is None or color == serving or skipped(app):
        return None
    res = app.spec.resources
    short: list[str] = []

    limit = res.memory_bytes if res is not None else None
    live_usage = cap.usage.get(live.name) if live is not None and live.running and serving is not None else None
    need, why = (limit, "its memory limit") if limit is not None else (live_usage, f"what {serving} uses now, no limit set")
    if need is not None:
        freed = cap.usage.get(app.container_name(color), 0)  # the container it replaces is removed first
        room = headroom(cap.mem_total)
        available = cap.mem_available + freed - room
        if need > available:
            freed_text = f" + {human(freed)} used by the {color} container it replaces" if freed else ""
            short.append(
                f"memory: {color} may need {human(need)} ({why}), the host has {human(max(available, 0))} "
                f"(MemAvailable {human(cap.mem_available)} in {cap.meminfo}{freed_text} - {human(room)} headroom)"
            )

    if res is not None and res.cpus is not None and cap.cpus is not None and res.cpus > cap.cpus:
        short.append(f"cpus: {res.cpus:g} wanted, Docker sees {cap.cpus} CPUs")

    if not cap.image_present and cap.disk_free is not None:
        estimate = cap.image_size or 0
        disk_need = estimate + DISK_HEADROOM
        if cap.disk_free < disk_need:
            basis = f"the live image's {human(estimate)} + " if estimate else ""
            short.append(
                f"disk: pulling {app.spec.image} needs {human(disk_need)} ({basis}{human(DISK_HEADROOM)}) free under "
                f"{cap.docker_root}, {human(cap.disk_free)} is"
            )

    if not short:
        return None
    keeps = f"{serving} keeps serving" if serving is not None else "nothing serves yet"
    return Blocker(
        "InsufficientCapacity",
        f"not starting {app.container_name(color)}: " + "; ".join(short) + f"; nothing was started, {keeps}. Free memory or "
        "disk, lower spec.resources, or set spec.resources.skipCapacityCheck: true to start it anyway",
    )
