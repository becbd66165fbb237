"""Actions: the steps a plan is made of. Plain data; `apply.py` gives them effect."""

from __future__ import annotations

from dataclasses import dataclass

from controller.kernel.document import Stored
from controller.spec.base import Color


@dataclass(frozen=True)
class Action:
    color: Color
    reason: str  # why the planner wants it: shown by --plan, logged, kept in history

    @property
    def verb(self) -> str:
        return type(self).__name__

    def describe(self) -> str:
        return f"{self.verb}({self.color}): {self.reason}"


@dataclass(frozen=True)
class RemoveContainer(Action):
    pass


@dataclass(frozen=True)
class CreateContainer(Action):
    revision: str = ""


@dataclass(frozen=True)
class StartContainer(Action):
    pass


@dataclass(frozen=True)
class WaitHealthy(Action):
    """Poll the health check; `deadline` None means timeoutSeconds from when the wait starts."""

    deadline: float | None = None


@dataclass(frozen=True)
class SwitchRoute(Action):
    """Point Nginx at `color`: write the include (unless already right), test, reload, confirm, or restore.

    With nginx.switch: flag the flag file is set for `color` first; `reload` False means the loaded config
    already follows the files, so setting the flag is the whole switch (no reload).
    """

    write_include: bool = True
    reload: bool = True


@dataclass(frozen=True)
class WriteMarker(Action):
    pass


@dataclass(frozen=True)
class StopContainer(Action):
    """Stop a color that no longer takes traffic, after its connections drain."""


@dataclass(frozen=True)
class Blocker(Stored):
    """A difference the controller will not resolve by itself; it makes the pass fail (exit 1)."""

    reason: str  # CamelCase, becomes the Degraded condition's reason
    message: str


# spec.preview (controller/app/preview.py): the same container steps on the idle color, as their own types so the
# reconciler can tell a failed preview (degrades the preview only) from a failed deploy.
@dataclass(frozen=True)
class RemovePreview(RemoveContainer):
    pass


@dataclass(frozen=True)
class CreatePreview(CreateContainer):
    """Create the idle color from spec.preview's image and env (the revision is the preview's)."""


@dataclass(frozen=True)
class StartPreview(StartContainer):
    pass


@dataclass(frozen=True)
class WaitPreview(WaitHealthy):
    pass


@dataclass(frozen=True)
class SwitchPreview(Action):
    """Create (`on`) or remove the preview flag file, then confirm through the control server that preview
    requests reach `color` (the idle color when on, the live one when off)."""

    on: bool = False


PREVIEW_ACTIONS = (RemovePreview, CreatePreview, StartPreview, WaitPreview, SwitchPreview)
# Deploy gates (spec.checks / spec.hooks; controller/app/gates.py plans them, controller/app/steps/gates.py runs them).


@dataclass(frozen=True)
class RunHook(Action):
    """Run spec.hooks.<phase> for `revision` in a one-off container of the new image (or collect the one a
    killed pass left running). beforeSwitch gates the switch; afterSwitch only reports."""

    phase: str = "beforeSwitch"
    revision: str = ""


@dataclass(frozen=True)
class RunCheck(Action):
    """Run spec.checks.beforeSwitch[index] against `color`; a failure fails the deploy (traffic untouched)."""

    index: int = 0
    revision: str = ""


@dataclass(frozen=True)
class RemoveHook(Action):
    """Remove a hook container a killed or superseded pass left behind (its result is remembered first): a finished
    one, or (`timed_out`) one still running past its own timeout, stopped so and recorded as timed out."""

    name: str = ""
    phase: str = ""
    revision: str = ""
    timed_out: bool = False
    secrets: str | None = None  # its label bluegreen.secrets-fingerprint: whose values redact its output (None: unknown)


# Maintenance (spec.maintenance, hooks.beforeSwitch.maintenance; controller/app/rules/maintenance.py plans it).
@dataclass(frozen=True)
class SwitchMaintenance(Action):
    """Create (`on`, holding `message`) or remove the maintenance flag file, then confirm through the control server
    that the site answers (or no longer answers) with the maintenance page. `wrap`: around a migration's switch."""

    on: bool = False
    message: str = ""
    wrap: bool = False


@dataclass(frozen=True)
class ImageRemoval:
    """An unused image of the app's repository a converged pass removes (`Plan.prune`; pruning.prune does it)."""

    image_id: str
    references: tuple[str, ...]
    created: float
    reason: str

    def describe(self) -> str:
        return f"RemoveImage({', '.join(self.references)} {self.image_id[:19]}): {self.reason}"
