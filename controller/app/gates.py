"""Deploy gates, the shared names: a hook's container and labels, and the fingerprint a failed gate is held
against. Where the gates go in a plan: controller/app/rules/gates.py; how they run: controller/app/steps/gates.py.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from controller.world.facts import LABEL_APP, LABEL_HOOK, LABEL_MANAGED, LABEL_REVISION, MANAGED_BY

if TYPE_CHECKING:  # the models load with the first spec validated (none on a spec-cache hit)
    from controller.spec.app import BlueGreenApp

GATE_REASONS = frozenset({"CheckFailed", "HookFailed"})
BEFORE, AFTER = "beforeSwitch", "afterSwitch"


def hook_container_name(app: BlueGreenApp, phase: str, revision: str) -> str:
    return f"{app.name}-hook-{phase.lower()}-{revision}"


def hook_labels(app: BlueGreenApp, phase: str, revision: str) -> dict[str, str]:
    """What finds a hook's container again (after a kill -9): app, phase and revision."""
    return {LABEL_APP: app.name, LABEL_MANAGED: MANAGED_BY, LABEL_HOOK: phase, LABEL_REVISION: revision}


def gates_fingerprint(app: BlueGreenApp) -> str:
    """What the gates are (spec.checks, spec.hooks): a failure is held against these, not against later ones."""
    doc = {
        "checks": app.spec.checks.model_dump(mode="json") if app.spec.checks is not None else None,
        "hooks": app.spec.hooks.model_dump(mode="json") if app.spec.hooks is not None else None,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]
