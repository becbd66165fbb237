"""SSM Parameter Store through boto3: parameter versions (no decryption) and pinned decrypted values.

`versions()` reads names and versions only (WithDecryption=False: no KMS call, no plaintext);
`values()` decrypts exactly the versions it is given (`name:version` selectors) and registers every value
with the log redactor the moment it arrives. Errors are SecretsError with one line naming the path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from controller.drivers.aws import aws_client, aws_errors
from controller.kernel.errors import SecretsError
from controller.kernel.logs import register_secret
from controller.spec.base import ENV_NAME_RE
from controller.world.secrets import SecretRef

if TYPE_CHECKING:  # the models load with the first spec validated (none on a spec-cache hit)
    from controller.spec.app import SsmSecrets

_BATCH = 10  # GetParameters takes at most 10 names


class SsmSource:
    """Reads versions (cheap, no decryption) and pinned values of the parameters an app wants."""

    def __init__(self, client_factory: Callable[[str, str | None], Any] = aws_client) -> None:
        self._factory = client_factory
        self._clients: dict[str | None, Any] = {}

    def _client(self, cfg: SsmSecrets) -> Any:
        if cfg.region not in self._clients:
            with aws_errors(f"SSM parameters under {cfg.path}", SecretsError):
                self._clients[cfg.region] = self._factory("ssm", cfg.region)
        return self._clients[cfg.region]

    def _get_parameters(self, ssm: Any, names: list[str], *, decrypt: bool, missing: str) -> list[dict[str, Any]]:
        """GetParameters in batches of 10; any name the answer lists as invalid is `SSM parameter <name>: <missing>`."""
        found: list[dict[str, Any]] = []
        for i in range(0, len(names), _BATCH):
            batch = names[i : i + _BATCH]
            with aws_errors(f"SSM parameters {', '.join(batch)}", SecretsError):
                out = ssm.get_parameters(Names=batch, WithDecryption=decrypt)
            invalid = out.get("InvalidParameters") or []
            if invalid:
                raise SecretsError(f"SSM parameter {', '.join(sorted(invalid))}: {missing}")
            params = out.get("Parameters") or []
            if decrypt:
                for p in params:
                    register_secret(str(p.get("Value") or ""))  # before anything else can log it
            found += params
        return found

    def versions(self, cfg: SsmSecrets) -> list[SecretRef]:
        ssm = self._client(cfg)
        found: list[dict[str, Any]] = []
        if cfg.names is None:
            path = cfg.path.rstrip("/") or "/"
            with aws_errors(f"SSM parameters under {cfg.path}", SecretsError):
                for page in ssm.get_paginator("get_parameters_by_path").paginate(
                    Path=path, Recursive=False, WithDecryption=False
                ):
                    found += page.get("Parameters") or []
            if not found:
                raise SecretsError(f"SSM parameters under {cfg.path}: none found (check the path and region)")
        else:
            found = self._get_parameters(ssm, [cfg.path + n for n in cfg.names], decrypt=False, missing="ParameterNotFound")
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
        found = self._get_parameters(
            ssm, list(by_selector), decrypt=True, missing="version no longer exists (rotated meanwhile?)"
        )
        env: dict[str, str] = {}
        for p in found:
            ref = by_selector.get(f"{p['Name']}:{p['Version']}") or by_selector.get(str(p.get("Selector") or ""))
            if ref is not None:
                env[ref.env] = str(p.get("Value") or "")
        lost = sorted(r.parameter for r in refs if r.env not in env)
        if lost:
            raise SecretsError(f"SSM parameter {', '.join(lost)}: not returned by GetParameters")
        return env
