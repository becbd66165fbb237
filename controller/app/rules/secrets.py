"""Secrets and the live color: a rotated secret alone never replaces the container that serves. Pure.

Safety rule 2 for secrets: the desired color, while it serves, is held to the secrets fingerprint it was
started with when that is its only difference from the spec; the plan reports the secrets as stale
(`SecretsStale`) and a flip deploys them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from controller.spec.base import Color, other
from controller.world.facts import FINGERPRINT_KEY, LABEL_FINGERPRINT, ContainerFact

if TYPE_CHECKING:  # the models load with the first spec validated (none on a spec-cache hit)
    from controller.spec.app import BlueGreenApp


def hold_live_secrets(
    app: BlueGreenApp, cur: ContainerFact | None, serving: Color | None, revision_extra: dict[str, str]
) -> tuple[dict[str, str], str | None]:
    """The revision inputs the desired color is held to, and why its secrets are stale (None: they are not).

    `revision_extra` carries the current secrets fingerprint (FINGERPRINT_KEY). The desired color, when it
    serves and runs, keeps the fingerprint on its own label when that is its *only* difference from the
    spec: replacing it would drop traffic, and a flip deploys the new secrets. With another difference
    too, the inputs stay as they are (the plan refuses: LiveColorOutdated) and the secrets are stale as well.
    """
    want = app.spec.activeColor
    current = revision_extra.get(FINGERPRINT_KEY)
    if cur is None or not cur.running or serving != want:
        return dict(revision_extra), None
    live_fp = cur.labels.get(LABEL_FINGERPRINT)
    if live_fp == current:
        return dict(revision_extra), None
    new = f"fingerprint {current}" if current else "no secrets"
    was = f"fingerprint {live_fp}" if live_fp else "no secrets"
    stale = (
        f"{app.container_name(want)} serves with secrets {was}, the spec now resolves {new}; "
        f"it is not restarted while live: set activeColor: {other(want)} to deploy them"
    )
    held = {k: v for k, v in revision_extra.items() if k != FINGERPRINT_KEY}
    if live_fp:
        held[FINGERPRINT_KEY] = live_fp
    if cur.revision != app.revision(want, held):
        return dict(revision_extra), stale
    return held, stale
