"""Secrets of an app, as the core sees them: references and versions (plain data), and the one loader of values.

What goes where
- Every pass, a `SecretsResolver` called with the app reads the parameters' *versions* through its
  source (SSM: `controller/drivers/ssm.py`, no decryption). The result `Resolved` is plain data: the refs
  (names and versions, never values) and their fingerprint (a hash of names and versions). The
  fingerprint is a revision input of the plan (`decide.py`), so a rotated secret changes the desired revision.
- `SecretsResolver.load_values(app, resolved)` is the one place values are fetched: the reconciler calls
  it when the plan creates a container or runs a hook, and `read_values` (the same, without the envFile) when
  it only reads output a secret may be in (a hook's or a check's): the source registers every value it
  fetches with the log redactor (controller/drivers/ssm.py), so that output is redacted before it is kept. The values are pinned to exactly the versions that were
  fingerprinted and go only into the new color's container environment (and `envFile`, mode 0600).
- The container records the fingerprint in label `bluegreen.secrets-fingerprint`.

Stale secrets
The live color is never restarted to pick up a rotated secret. That is a planner rule
(`rules/secrets.hold_live_secrets`): it holds the serving color to its own recorded fingerprint when the
fingerprint is its *only* difference from the spec, and reports `Plan.secrets_stale`.

Nothing here imports boto3 (or any driver): the source is given by the caller (`runtime.build`, the composition root).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from controller.kernel.errors import SecretsError
from controller.world.facts import FINGERPRINT_KEY, LABEL_FINGERPRINT

if TYPE_CHECKING:  # the models load with the first spec validated (none on a spec-cache hit)
    from controller.spec.app import BlueGreenApp, SsmSecrets

__all__ = [
    "FINGERPRINT_KEY",
    "LABEL_FINGERPRINT",
    "NoSecrets",
    "Resolved",
    "Resolver",
    "SecretRef",
    "SecretSource",
    "SecretsResolver",
    "fingerprint",
    "render_env_file",
]


@dataclass(frozen=True)
class SecretRef:
    """One parameter as the plan sees it: where it comes from and which version. Never its value."""

    env: str
    parameter: str
    version: int
    type: str

    def shown(self) -> str:
        return f"{self.env}={self.parameter}:{self.version}"


def fingerprint(refs: list[SecretRef]) -> str:
    rows = sorted([r.env, r.parameter, r.version] for r in refs)
    return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Resolved:
    """What an app's secrets resolve to in this pass: versions and their fingerprint, never a value."""

    fingerprint: str | None = None  # None: the app has no secrets
    refs: tuple[SecretRef, ...] = ()

    @property
    def revision_extra(self) -> dict[str, str]:
        """Deploy-time revision inputs of the plan (`gather`/`decide`) (and the container's fingerprint label)."""
        return {FINGERPRINT_KEY: self.fingerprint} if self.fingerprint is not None else {}

    @property
    def names(self) -> list[str] | None:
        """`ENV=/parameter:version` per secret, for status; None when the app has no secrets."""
        return [r.shown() for r in self.refs] if self.fingerprint is not None else None


class SecretSource(Protocol):
    def versions(self, cfg: SsmSecrets) -> list[SecretRef]: ...

    def values(self, cfg: SsmSecrets, refs: list[SecretRef]) -> dict[str, str]: ...


class Resolver(Protocol):
    """What the reconciler needs: versions every pass, values only for a container about to be created."""

    def __call__(self, app: BlueGreenApp) -> Resolved: ...

    def load_values(self, app: BlueGreenApp, resolved: Resolved) -> dict[str, str]: ...

    def read_values(self, app: BlueGreenApp, resolved: Resolved) -> dict[str, str]:
        """The values, and nothing written: for the redactor, before output of the revision is read."""
        ...


class NoSecrets:
    """A resolver that ignores `spec.secrets` (the reconciler's default, for in-memory worlds)."""

    def __call__(self, app: BlueGreenApp) -> Resolved:
        return Resolved()

    def load_values(self, app: BlueGreenApp, resolved: Resolved) -> dict[str, str]:
        return {}

    def read_values(self, app: BlueGreenApp, resolved: Resolved) -> dict[str, str]:
        return {}


def render_env_file(env: dict[str, str], fp: str) -> str:
    """`docker run --env-file` format: NAME=value lines, no quoting (so no newlines in values)."""
    lines = ["# Written by bluegreen-controller; do not edit.", f"# {LABEL_FINGERPRINT}={fp}"]
    for k in sorted(env):
        if "\n" in env[k] or "\r" in env[k]:
            raise SecretsError(f"envFile: the value of {k} holds a line break and cannot be written in env-file format")
        lines.append(f"{k}={env[k]}")
    return "\n".join(lines) + "\n"


class SecretsResolver:
    """The `Resolver` of the command line: SSM versions through `source`, the envFile through `write_file`."""

    def __init__(self, write_file: Callable[[Path, str, int], None] | None, source: SecretSource) -> None:
        self._write_file = write_file
        self.source = source

    def __call__(self, app: BlueGreenApp) -> Resolved:
        cfg = app.spec.secrets
        if cfg is None:
            return Resolved()
        refs = self.source.versions(cfg.ssm)
        clash = sorted(r.env for r in refs if r.env in app.spec.env)
        if clash:
            raise SecretsError(f"SSM parameters under {cfg.ssm.path}: {', '.join(clash)} also set in spec.env")
        return Resolved(fingerprint=fingerprint(refs), refs=tuple(refs))

    def load_values(self, app: BlueGreenApp, resolved: Resolved) -> dict[str, str]:
        """The values of exactly `resolved`'s versions (raises SecretsError); writes envFile when the spec has one."""
        values = self.read_values(app, resolved)
        cfg = app.spec.secrets
        if cfg is not None and resolved.fingerprint is not None and cfg.envFile is not None:
            if self._write_file is None:
                raise SecretsError(f"envFile {cfg.envFile}: no writer configured")
            self._write_file(cfg.envFile, render_env_file({**app.spec.env, **values}, resolved.fingerprint), 0o600)
        return values

    def read_values(self, app: BlueGreenApp, resolved: Resolved) -> dict[str, str]:
        """The values of exactly `resolved`'s versions (raises SecretsError); nothing written."""
        cfg = app.spec.secrets
        if cfg is None or resolved.fingerprint is None:
            return {}
        return self.source.values(cfg.ssm, list(resolved.refs))
