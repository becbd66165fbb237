"""Secrets from AWS SSM Parameter Store, resolved at deploy time and never shown.

What goes where
- Every pass reads the parameters' *versions* (GetParametersByPath / GetParameters with
  WithDecryption=False: no KMS call, no plaintext). Their fingerprint (a hash of names and versions,
  never of values) is a revision input, so a rotated secret changes the desired revision.
- Values are fetched (WithDecryption=True) only when the plan creates a container, pinned to exactly
  the versions that were fingerprinted (`name:version` selectors), and go only into the new color's
  container environment (and `envFile`, mode 0600). Each value is registered with the log redactor.
- The container records the fingerprint in label `bluegreen.secrets-fingerprint`.

Stale secrets
The live color is never restarted to pick up a rotated secret. `hold_live` lets the plan keep the
live container when the fingerprint is the *only* difference (its revision equals the one computed
with its own recorded fingerprint), and reports `SecretsStale`; the next color flip creates the new
color with the current versions.

boto3 is imported only when an app has `secrets` (or an image on ECR, see `registry.py`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from controller.errors import SecretsError
from controller.facts import Observed
from controller.logs import redact_text, register_secret
from controller.reconcile import Resolved
from controller.routing import configured_color
from controller.spec import ENV_NAME_RE, BlueGreenApp, SsmSecrets

FINGERPRINT_KEY = "secrets-fingerprint"  # revision_extra key; apply labels it bluegreen.secrets-fingerprint
LABEL_FINGERPRINT = f"bluegreen.{FINGERPRINT_KEY}"
_BATCH = 10  # GetParameters takes at most 10 names


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


# AWS ------------------------------------------------------------------------------------------


def aws_config(service: str) -> Any:
    """botocore Config: standard retry mode (throttling is retried with backoff), short timeouts."""
    from botocore.config import Config

    attempts = int(os.environ.get("AWS_MAX_ATTEMPTS") or 5)
    return Config(
        retries={"mode": os.environ.get("AWS_RETRY_MODE") or "standard", "max_attempts": attempts},
        connect_timeout=float(os.environ.get("BLUEGREEN_AWS_CONNECT_TIMEOUT") or 5),
        read_timeout=float(os.environ.get("BLUEGREEN_AWS_READ_TIMEOUT") or 15),
        user_agent_extra="bluegreen-controller",
    )


def aws_client(service: str, region: str | None) -> Any:
    """A boto3 client on the standard credential chain; AWS_ENDPOINT_URL[_<SERVICE>] override the endpoint."""
    import boto3  # lazily: a plain --once of an app without secrets never imports it

    endpoint = os.environ.get(f"AWS_ENDPOINT_URL_{service.upper()}") or os.environ.get("AWS_ENDPOINT_URL") or None
    return boto3.session.Session().client(service, region_name=region, endpoint_url=endpoint, config=aws_config(service))


def aws_error(e: BaseException, what: str) -> str:
    """One operator-facing line for a botocore failure; never contains a parameter value."""
    import botocore.exceptions as bx

    if isinstance(e, bx.NoRegionError):
        return f"{what}: no AWS region (set secrets.ssm.region, AWS_REGION or a profile region)"
    if isinstance(e, (bx.NoCredentialsError, bx.PartialCredentialsError, bx.CredentialRetrievalError)):
        return f"{what}: no AWS credentials (instance profile, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE)"
    if isinstance(e, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError)):
        return f"{what}: AWS endpoint unreachable: {_line(e)}"
    if isinstance(e, bx.ClientError):
        err = e.response.get("Error") or {}
        code = str(err.get("Code") or "Error")
        raw = str(err.get("Message") or "")
        xml = re.search(r"<Code>([^<]*)</Code>.*?<Message>([^<]*)</Message>", raw, re.S)
        if xml:  # an XML error body where JSON was expected (some proxies and emulators)
            code, raw = xml.group(1), xml.group(2)
        msg = _line(raw)
        retries = (e.response.get("ResponseMetadata") or {}).get("RetryAttempts")
        extra = f" (after {retries} retries)" if retries else ""
        return f"{what}: {code}{extra}: {msg}".rstrip(": ")
    if isinstance(e, bx.BotoCoreError):
        return f"{what}: {type(e).__name__}: {_line(e)}"
    return f"{what}: {type(e).__name__}: {_line(e)}"


def _line(e: object) -> str:
    text = str(e).strip()
    return redact_text(text.splitlines()[0][:300] if text else "")


@contextmanager
def _mapped(what: str) -> Iterator[None]:
    import botocore.exceptions as bx

    try:
        yield
    except (bx.BotoCoreError, bx.ClientError) as e:
        raise SecretsError(aws_error(e, what)) from None  # `from None`: the botocore chain stays out of any output


# Reading SSM ----------------------------------------------------------------------------------


class SsmSource:
    """Reads versions (cheap, no decryption) and pinned values of the parameters an app wants."""

    def __init__(self, client_factory: Callable[[str, str | None], Any] = aws_client) -> None:
        self._factory = client_factory
        self._clients: dict[str | None, Any] = {}

    def _client(self, cfg: SsmSecrets) -> Any:
        if cfg.region not in self._clients:
            with _mapped(f"SSM parameters under {cfg.path}"):
                self._clients[cfg.region] = self._factory("ssm", cfg.region)
        return self._clients[cfg.region]

    def versions(self, cfg: SsmSecrets) -> list[SecretRef]:
        ssm = self._client(cfg)
        found: list[dict[str, Any]] = []
        if cfg.names is None:
            path = cfg.path.rstrip("/") or "/"
            with _mapped(f"SSM parameters under {cfg.path}"):
                for page in ssm.get_paginator("get_parameters_by_path").paginate(
                    Path=path, Recursive=False, WithDecryption=False
                ):
                    found += page.get("Parameters") or []
            if not found:
                raise SecretsError(f"SSM parameters under {cfg.path}: none found (check the path and region)")
        else:
            wanted = [cfg.path + n for n in cfg.names]
            for i in range(0, len(wanted), _BATCH):
                batch = wanted[i : i + _BATCH]
                with _mapped(f"SSM parameters {', '.join(batch)}"):
                    out = ssm.get_parameters(Names=batch, WithDecryption=False)
                missing = out.get("InvalidParameters") or []
                if missing:
                    raise SecretsError(f"SSM parameter {', '.join(sorted(missing))}: ParameterNotFound")
                found += out.get("Parameters") or []
        refs = []
        for p in found:
            name = str(p["Name"])
            rel = name[len(cfg.path) :] if name.startswith(cfg.path) else name.rsplit("/", 1)[-1]
            env = cfg.rename.get(rel, rel)
            if not ENV_NAME_RE.match(env) or env.startswith("BLUEGREEN_"):
                raise SecretsError(
                    f"SSM parameter {name}: {env!r} is not a usable environment variable name; map it with secrets.ssm.rename"
                )
            refs.append(SecretRef(env=env, parameter=name, version=int(p["Version"]), type=str(p.get("Type") or "")))
        dup = sorted({r.env for r in refs if sum(1 for o in refs if o.env == r.env) > 1})
        if dup:
            raise SecretsError(f"SSM parameters under {cfg.path}: more than one parameter becomes {', '.join(dup)}")
        return sorted(refs, key=lambda r: r.env)

    def values(self, cfg: SsmSecrets, refs: list[SecretRef]) -> dict[str, str]:
        """Decrypted values of exactly these versions (GetParameters with name:version selectors)."""
        ssm = self._client(cfg)
        by_selector = {f"{r.parameter}:{r.version}": r for r in refs}
        env: dict[str, str] = {}
        selectors = list(by_selector)
        for i in range(0, len(selectors), _BATCH):
            batch = selectors[i : i + _BATCH]
            with _mapped(f"SSM parameters {', '.join(batch)}"):
                out = ssm.get_parameters(Names=batch, WithDecryption=True)
            missing = out.get("InvalidParameters") or []
            if missing:
                raise SecretsError(f"SSM parameter {', '.join(sorted(missing))}: version no longer exists (rotated meanwhile?)")
            for p in out.get("Parameters") or []:
                value = str(p.get("Value") or "")
                register_secret(value)  # before anything else can log it
                ref = by_selector.get(f"{p['Name']}:{p['Version']}") or by_selector.get(str(p.get("Selector") or ""))
                if ref is None:
                    continue
                env[ref.env] = value
        lost = sorted(r.parameter for r in refs if r.env not in env)
        if lost:
            raise SecretsError(f"SSM parameter {', '.join(lost)}: not returned by GetParameters")
        return env


# The resolver the reconciler calls ---------------------------------------------------------------


def render_env_file(env: dict[str, str], fp: str) -> str:
    """`docker run --env-file` format: NAME=value lines, no quoting (so no newlines in values)."""
    lines = ["# Written by bluegreen-controller; do not edit.", f"# {LABEL_FINGERPRINT}={fp}"]
    for k in sorted(env):
        if "\n" in env[k] or "\r" in env[k]:
            raise SecretsError(f"envFile: the value of {k} holds a line break and cannot be written in env-file format")
        lines.append(f"{k}={env[k]}")
    return "\n".join(lines) + "\n"


def hold_live(app: BlueGreenApp, resolved: Resolved, obs: Observed) -> Resolved:
    """Pure: which secret fingerprint the plan holds the desired color to, and whether it is stale.

    The color that serves traffic and runs keeps its own fingerprint when that is its *only*
    difference from the spec: replacing it would drop traffic, and a flip deploys the new secrets.
    """
    want = app.spec.activeColor
    cur = obs.containers[want]
    serving = obs.route.color if obs.route.reachable else configured_color(app, obs.include, obs.flag)  # as the planner
    current = resolved.revision_extra.get(FINGERPRINT_KEY)
    if cur is None or not cur.running or serving != want:
        return replace(resolved, stale=None)
    live_fp = cur.labels.get(LABEL_FINGERPRINT)
    if live_fp == current:
        return replace(resolved, stale=None)
    held = {k: v for k, v in resolved.revision_extra.items() if k != FINGERPRINT_KEY}
    if live_fp:
        held[FINGERPRINT_KEY] = live_fp
    if cur.revision != app.revision(want, held):
        # Something else differs too: the planner blocks (LiveColorOutdated); the secrets are stale as well.
        return replace(resolved, stale=_stale_message(app, live_fp, current))
    return replace(resolved, revision_extra=held, stale=_stale_message(app, live_fp, current))


def _stale_message(app: BlueGreenApp, live_fp: str | None, current: str | None) -> str:
    want = app.spec.activeColor
    now = f"fingerprint {current}" if current else "no secrets"
    was = f"fingerprint {live_fp}" if live_fp else "no secrets"
    return (
        f"{app.container_name(want)} serves with secrets {was}, the spec now resolves {now}; "
        f"it is not restarted while live: set activeColor: {'green' if want == 'blue' else 'blue'} to deploy them"
    )


class SecretsResolver:
    """`Resolver` for the reconciler: versions every pass, values only for a container about to be created."""

    def __init__(self, write_file: Callable[[Path, str, int], None] | None = None, source: SsmSource | None = None) -> None:
        self._write_file = write_file
        self._source = source

    @property
    def source(self) -> SsmSource:
        if self._source is None:
            self._source = SsmSource()
        return self._source

    def __call__(self, app: BlueGreenApp) -> Resolved:
        cfg = app.spec.secrets

        if cfg is None:
            plain = Resolved()
            return replace(plain, adjust=lambda obs: hold_live(app, plain, obs))
        refs = self.source.versions(cfg.ssm)
        clash = sorted(r.env for r in refs if r.env in app.spec.env)
        if clash:
            raise SecretsError(f"SSM parameters under {cfg.ssm.path}: {', '.join(clash)} also set in spec.env")
        fp = fingerprint(refs)

        def load_env() -> dict[str, str]:
            values = self.source.values(cfg.ssm, refs)
            if cfg.envFile is not None:
                if self._write_file is None:
                    raise SecretsError(f"envFile {cfg.envFile}: no writer configured")
                self._write_file(cfg.envFile, render_env_file({**app.spec.env, **values}, fp), 0o600)
            return values

        base = Resolved(
            revision_extra={FINGERPRINT_KEY: fp},
            names=[r.shown() for r in refs],
            load_env=load_env,
        )
        return replace(base, adjust=lambda obs: hold_live(app, base, obs))
