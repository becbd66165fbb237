"""Desired state of an accessory (issue 13): `kind: Accessory`, a data service (MongoDB, Redis, Qdrant) beside the
colors, in the same spec directory as the apps and kept running by the same loop.

An accessory is one container named after it (`metadata.name`: also its network alias, so an app on the same
network reaches `redis:6379`), labelled `bluegreen.accessory=<name>`. Its named volumes are never removed.
`configHash` covers everything that shapes the container; a different hash is an out-of-date accessory, which
`update: manual` (the default) only reports and `update: recreate` replaces after an optional backup.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from controller.kernel import imageref
from controller.kernel.errors import SpecError
from controller.spec.app import (
    ENV_NAME_RE,
    HEALTH_PATH_PATTERN,
    NETWORK_PATTERN,
    Metadata,
    Port,
    SecretsSpec,
    _digest,
    _Model,
    _one_line,
    ip_address,
    load_yaml,
)

# Docker's volume name grammar (daemon/names: RestrictedNamePattern), at most 64 characters here.
VOLUME_NAME_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{1,63}$"
_VOLUME_RE = re.compile(VOLUME_NAME_PATTERN)
_CONTAINER_PATH_RE = re.compile(r"^(/[A-Za-z0-9._@+=,:~-]+)+$")
# Fields of the spec whose change makes the container out of date, in the order a message names them.
CONFIG_FIELDS = ("image", "ports", "bindAddress", "volumes", "command", "env", "network", "restartPolicy", "secrets")


class HttpCheck(_Model):
    port: Port = Field(description="Container port to probe (through its host port when published, else the container's address).")
    path: str = Field("/", pattern=HEALTH_PATH_PATTERN)
    expectStatus: int = Field(200, ge=100, le=599)


class AccessoryHealthCheck(_Model):
    """Exactly one of command (run inside the container, exit 0 = healthy), tcp (a port accepts) or http."""

    command: list[str] | None = Field(None, min_length=1, description="argv run with `docker exec`; exit status 0 is healthy.")
    tcp: Port | None = Field(None, description="Container port that must accept a TCP connection.")
    http: HttpCheck | None = None
    timeoutSeconds: float = Field(60.0, gt=0, le=3600, description="Longest wait for healthy after a create or start.")
    intervalSeconds: float = Field(1.0, gt=0, le=60)

    @model_validator(mode="after")
    def _exactly_one(self) -> AccessoryHealthCheck:
        kinds = [k for k in ("command", "tcp", "http") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"exactly one of command, tcp, http is required (got {', '.join(kinds) or 'none'})")
        return self

    @property
    def kind(self) -> str:
        return "command" if self.command is not None else "tcp" if self.tcp is not None else "http"


class BackupSpec(_Model):
    command: list[str] = Field(min_length=1, description="argv of a one-off container of the accessory's image, its volumes mounted.")
    timeoutSeconds: int = Field(600, ge=1, le=86400)


class AccessorySpec(_Model):
    image: str = Field(description="Image reference: name[:tag] or name@sha256:digest.")
    ports: dict[str, Port] = Field(default_factory=dict, description='Container port -> host port, e.g. {"6379": 16379}.')
    bindAddress: str = Field("127.0.0.1", description="Host address the ports are published on (loopback unless exposeBeyondLoopback).")
    exposeBeyondLoopback: bool = False
    volumes: dict[str, str] = Field(
        default_factory=dict, description="Named Docker volume -> path in the container. The controller never removes a volume."
    )
    command: list[str] | None = Field(None, min_length=1, description="Overrides the image's CMD.")
    env: dict[str, str] = Field(default_factory=dict)
    secrets: SecretsSpec | None = Field(None, description="SSM parameters as env (versions are part of the config hash).")
    healthCheck: AccessoryHealthCheck | None = Field(None, description="None: running counts as healthy.")
    network: str | None = Field(None, pattern=NETWORK_PATTERN, description="User-defined network, created when missing.")
    update: Literal["manual", "recreate"] = Field(
        "manual", description="manual: an out-of-date container is reported (AccessoryOutdated), never touched; recreate: replaced."
    )
    backup: BackupSpec | None = Field(None, description="With update: recreate, must succeed before the old container is stopped.")
    restartPolicy: Literal["no", "always", "unless-stopped", "on-failure"] = "unless-stopped"
    stopTimeoutSeconds: int = Field(30, ge=0, le=600)

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        return imageref.checked(v)

    @field_validator("ports", mode="before")
    @classmethod
    def _port_keys(cls, v: Any) -> Any:
        # YAML reads `6379: 16379` with an int key: the container port is the same either way.
        return {str(k) if isinstance(k, int) and not isinstance(k, bool) else k: p for k, p in v.items()} if isinstance(v, dict) else v

    @field_validator("ports")
    @classmethod
    def _ports(cls, v: dict[str, int]) -> dict[str, int]:
        for k in v:
            if not k.isdigit() or not 1 <= int(k) <= 65535 or str(int(k)) != k:
                raise ValueError(f"{k!r} is not a container port (1-65535)")
        if len(set(v.values())) != len(v):
            raise ValueError("two container ports on one host port")
        return v

    @field_validator("volumes")
    @classmethod
    def _volumes(cls, v: dict[str, str]) -> dict[str, str]:
        for name, path in v.items():
            if not _VOLUME_RE.match(name):
                raise ValueError(f"{name!r} is not a Docker volume name ([a-zA-Z0-9][a-zA-Z0-9_.-], 2-64 characters)")
            if not _CONTAINER_PATH_RE.match(path) or any(p in (".", "..") for p in path.split("/")):
                raise ValueError(f"{name}: {path!r} is not a normalised absolute container path")
        paths = list(v.values())
        for i, a in enumerate(paths):
            for b in paths[i + 1 :]:
                if a == b or a.startswith(b + "/") or b.startswith(a + "/"):
                    raise ValueError(f"volume paths {a} and {b} overlap")
        return v

    @field_validator("bindAddress")
    @classmethod
    def _addr(cls, v: str) -> str:
        return ip_address(v)

    @field_validator("network", mode="before")
    @classmethod
    def _network(cls, v: Any) -> Any:
        if v in ("host", "none", "bridge") or (isinstance(v, str) and v.startswith("container:")):
            raise ValueError(f"{v!r} is not allowed: a user-defined network is needed for name resolution")
        return v

    @model_validator(mode="after")
    def _checks(self) -> AccessorySpec:
        if not self.exposeBeyondLoopback and self.ports and not ipaddress.ip_address(self.bindAddress).is_loopback:
            raise ValueError(f"bindAddress {self.bindAddress} is not a loopback address (set exposeBeyondLoopback: true to allow it)")
        if self.secrets is not None and self.secrets.envFile is not None:
            raise ValueError("secrets.envFile is not supported for an accessory")
        if self.backup is not None and self.update != "recreate":
            raise ValueError("backup runs only before a recreate: set update: recreate")
        hc = self.healthCheck
        for port in (hc.tcp, hc.http.port if hc and hc.http else None) if hc else ():
            if port is not None and str(port) not in self.ports and self.network is None:
                raise ValueError(f"healthCheck port {port} is neither published (ports) nor reachable on a network")
        for k in self.env:
            if not ENV_NAME_RE.match(k):
                raise ValueError(f"env: {k!r} is not an environment variable name")
        return self


class Accessory(_Model):
    apiVersion: Literal["bluegreen/v1"]
    kind: Literal["Accessory"]
    metadata: Metadata
    spec: AccessorySpec

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def container_name(self) -> str:
        return self.name

    def config_fields(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """A short hash per field that shapes the container (kept as a label, so a change can be named)."""
        s = self.spec
        values: dict[str, Any] = {
            "image": s.image,
            "ports": s.ports,
            "bindAddress": s.bindAddress,
            "volumes": s.volumes,
            "command": s.command,
            "env": s.env,
            "network": s.network,
            "restartPolicy": s.restartPolicy,
            "secrets": extra or {},
        }
        return {k: _digest(values[k])[:8] for k in CONFIG_FIELDS}

    def config_hash(self, extra: dict[str, str] | None = None) -> str:
        return _digest(self.config_fields(extra))

    def generation(self) -> str:
        return _digest(self.model_dump(mode="json"))


def kind_of(doc: object) -> str | None:
    return doc.get("kind") if isinstance(doc, dict) and isinstance(doc.get("kind"), str) else None


def parse_accessory_doc(doc: dict[str, Any], source: str) -> Accessory:
    try:
        return Accessory.model_validate(doc)
    except ValidationError as e:
        raise SpecError(f"{source}: {_one_line(e)}") from None


def parse_accessory(text: str, source: str) -> Accessory:
    doc = load_yaml(text, source)
    if not isinstance(doc, dict):
        raise SpecError(f"{source}: expected an Accessory mapping, got {type(doc).__name__}")
    return parse_accessory_doc(doc, source)


def json_schema() -> dict[str, Any]:
    schema = Accessory.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Accessory"
    return schema
