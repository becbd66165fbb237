"""The plan: what one pass decides (`Plan`), and the facts about containers every rule reads the same way.

A plan is made in one place: `controller/app/decide.py` composes the rules of `controller/rules/` over what
`controller/app/gather.py` gathered. No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from controller.app.failover import OFF, Decision
from controller.app.maintenance import MaintenanceState
from controller.app.preview import PreviewState
from controller.spec.base import COLORS, Color, canonical_ip
from controller.world.actions import Action, Blocker, ImageRemoval
from controller.world.facts import ContainerFact

if TYPE_CHECKING:  # the models load with the first spec validated (none on a spec-cache hit)
    from controller.spec.app import BlueGreenApp


@dataclass(frozen=True)
class Plan:
    app: str
    generation: str
    revisions: dict[Color, str]
    serving: Color | None  # the color live before this plan (Nginx's answer, else the include's)
    target: Color | None  # the color live once the plan has run
    actions: tuple[Action, ...]
    blockers: tuple[Blocker, ...]
    diffs: tuple[str, ...]
    # The deploy-time revision inputs `revisions` were computed with (a created container is labelled with them).
    revision_extra: dict[str, str] = field(default_factory=dict)
    secrets_stale: str | None = None  # why the live color's secrets are out of date, if they are
    failover: Decision = OFF  # what the failover rule said (controller/app/failover.py)
    preview: PreviewState | None = None  # spec.preview's condition (None: no preview in the spec)
    maintenance: MaintenanceState | None = None  # the Maintenance condition (None: no maintenance for this app)
    # spec.keepImages: what pruning removes after this pass (a converged plan with image facts gathered only).
    prune: tuple[ImageRemoval, ...] = ()

    @property
    def converged(self) -> bool:
        """Nothing to do and nothing blocks (`inSync` in `--plan --json`)."""
        return not self.actions and not self.blockers


def matches(app: BlueGreenApp, color: Color, c: ContainerFact | None, revision: str) -> bool:
    """A container is the one we want when its label, image and published port all agree with the spec."""
    return (
        c is not None
        and c.revision == revision
        and c.image == app.spec.image
        and c.host_port == app.spec.ports.of(color)
        and canonical_ip(c.host_ip) in (app.spec.bindAddress, "")  # both canonical: `::1` is `0:0:0:0:0:0:0:1`
    )


def describe_container(c: ContainerFact | None) -> str:
    if c is None:
        return "missing"
    health = "" if c.healthy is None else (" healthy" if c.healthy else f" unhealthy ({c.health_detail})")
    restarts = f" restarted {c.restart_count}x" if c.restart_count else ""
    return f"{c.state}{health}{restarts} image={c.image} revision={c.revision or '-'}"


def describe_file(content: str | None) -> str:
    """A marker (or flag) as the controller may show it: the color it names, "missing", or "garbage, ...".
    Never its bytes: a root process reads it, and --plan, --status and status.json are readable by others."""
    if content is None:
        return "missing"
    what = getattr(content, "what", None)  # drivers.files.Garbage: a link, a FIFO, a device, too big
    if isinstance(what, str):
        return f"garbage, {what}"
    value = content.strip()
    return value if value in COLORS else f"garbage, {len(content.encode('utf-8', errors='replace'))} bytes"
