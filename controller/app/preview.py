"""spec.preview: the names the preview's parts share (its flag's content, its probe route, its condition).

The rules (when the idle color runs the preview, when preview requests reach it): controller/app/rules/preview.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the models load with the first spec validated (none on a spec-cache hit)
    from controller.spec.app import BlueGreenApp


PREVIEW_FLAG_CONTENT = "preview\n"  # what the controller writes; the site only tests that the file exists
HEADER = "X-Bluegreen-Preview"
COOKIE = "bluegreen_preview"


def preview_probe_url(app: BlueGreenApp) -> str:
    """The control server's preview route: decides like a public request that asks for the preview."""
    return f"{app.spec.nginx.controlUrl.rstrip('/')}/bluegreen-preview/{app.name}{app.spec.healthCheck.path}"


@dataclass(frozen=True)
class PreviewState:
    """What the PreviewReady condition says."""

    ready: bool
    reason: str
    message: str
