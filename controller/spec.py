"""Desired state: the `BlueGreenApp` document operators commit, and how it is loaded.

Unknown fields are rejected everywhere (a typo must not silently become a default).
`reconcile --schema` regenerates the JSON Schema shipped for editors.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from controller.errors import SpecError

Color = Literal["blue", "green"]
COLORS: tuple[Color, Color] = ("blue", "green")

NAME_RE = r"^[a-z0-9]([a-z0-9-]{0,48}[a-z0-9])?$"
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Docker reference grammar, simplified: [registry[:port]/]path[:tag][@sha256:digest].
IMAGE_RE = re.compile(
    r"^(?:(?P<registry>[a-zA-Z0-9.-]+(?::[0-9]+)?)/)?"
    r"(?P<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)

Port = Annotated[int, Field(ge=1, le=65535)]


def other(color: Color) -> Color:
    return "green" if color == "blue" else "blue"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Metadata(_Model):
    name: str = Field(pattern=NAME_RE, description="[a-z0-9-]; containers are named <name>-blue and <name>-green.")


class Ports(_Model):
    blue: Port = Field(18081, description="Host port of the blue container.")
    green: Port = Field(18082, description="Host port of the green container.")

    @model_validator(mode="after")
    def _distinct(self) -> Ports:
        if self.blue == self.green:
            raise ValueError(f"ports.blue and ports.green must differ (both are {self.blue})")
        return self

    def of(self, color: Color) -> int:
        return self.blue if color == "blue" else self.green


class HealthCheck(_Model):
    path: str = Field("/actuator/health", pattern=r"^/", description="HTTP path probed on the container's host port.")
    expectStatus: int = Field(200, ge=100, le=599, description="Status code that means healthy.")
    intervalSeconds: float = Field(1.0, gt=0, le=60, description="Pause between probes while waiting.")
    timeoutSeconds: float = Field(60.0, gt=0, le=3600, description="How long a new container may take to pass.")
    requestTimeoutSeconds: float = Field(2.0, gt=0, le=60, description="Timeout of one probe request.")
    stableSeconds: float = Field(
        2.0,
        ge=0,
        le=600,
        description="After its first pass a new color must keep passing (and keep running) this long before it gets traffic.",
    )


class NginxSpec(_Model):
    upstreamFile: Path | None = Field(
        None, description="Include written by the controller (`upstream <name> {...}`). Default /etc/nginx/conf.d/<name>.upstream.conf."
    )
    testCommand: list[str] = Field(default_factory=lambda: ["nginx", "-t"], min_length=1)
    reloadCommand: list[str] = Field(default_factory=lambda: ["nginx", "-s", "reload"], min_length=1)
    controlUrl: str = Field(
        "http://127.0.0.1:8099",
        pattern=r"^https?://",
        description="Base URL of the loopback-only control server in the Nginx site; used to confirm the live route.",
    )
    commandTimeoutSeconds: float = Field(30.0, gt=0, le=600)
    verifyTimeoutSeconds: float = Field(10.0, gt=0, le=600, description="How long a reload may take to show the new route.")
    switch: Literal["flag", "reload"] = Field(
        "flag",
        description="flag: the include holds one upstream per color and a switch creates/removes flagFile (no reload; "
        "needs the site of nginx/); reload: the include holds the live color and a switch reloads Nginx.",
    )
    flagFile: Path | None = Field(
        None,
        description="switch: flag: present = green serves, absent = blue serves (the site tests it with `if (-f ...)`). "
        "Default <upstreamFile's directory>/<name>.green.",
    )


SSM_REGION_RE = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"
SSM_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


class SsmSecrets(_Model):
    path: str = Field(
        pattern=r"^/[A-Za-z0-9_./-]*$",
        description="Parameter hierarchy, e.g. /dialogue/prod/. Every parameter directly under it becomes an env var named "
        "after its last path segment (SecureStrings decrypted).",
    )
    region: str | None = Field(
        None, pattern=SSM_REGION_RE, description="AWS region. Default: AWS_REGION / AWS_DEFAULT_REGION / the profile's region."
    )
    names: list[str] | None = Field(
        None, min_length=1, description="Only these parameters (names relative to path); a missing one is an error."
    )
    rename: dict[str, str] = Field(default_factory=dict, description="Parameter name (relative to path) -> env var name.")

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if "//" in v:
            raise ValueError(f"{v!r} is not an SSM path (empty segment)")
        return v if v.endswith("/") else v + "/"

    @field_validator("names")
    @classmethod
    def _names(cls, v: list[str] | None) -> list[str] | None:
        for n in v or []:
            if not SSM_NAME_RE.match(n):
                raise ValueError(f"{n!r} is not a parameter name relative to path ([A-Za-z0-9_.-])")
        if v is not None and len(set(v)) != len(v):
            raise ValueError("names must not repeat")
        return v

    @field_validator("rename")
    @classmethod
    def _rename(cls, v: dict[str, str]) -> dict[str, str]:
        for k, env in v.items():
            if not SSM_NAME_RE.match(k):
                raise ValueError(f"{k!r} is not a parameter name relative to path ([A-Za-z0-9_.-])")
            if not ENV_NAME_RE.match(env) or env.startswith("BLUEGREEN_"):
                raise ValueError(f"{env!r} is not a usable environment variable name")
        if len(set(v.values())) != len(v):
            raise ValueError("rename maps two parameters to one environment variable")
        return v


class SecretsSpec(_Model):
    ssm: SsmSecrets = Field(description="AWS SSM Parameter Store source.")
    envFile: Path | None = Field(
        None, description="Also write the resolved env (spec.env + secrets) here, mode 0600, atomically, when a color is created."
    )

    @field_validator("envFile")
    @classmethod
    def _abs(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_absolute():
            raise ValueError(f"{v} must be an absolute path")
        return v


class AppSpec(_Model):
    image: str = Field(description="Image reference: name[:tag] or name@sha256:digest.")
    activeColor: Color
    containerPort: Port = Field(8081, description="Port the app listens on inside the container.")
    ports: Ports = Field(default_factory=lambda: Ports())
    bindAddress: str = Field("127.0.0.1", description="Host address the color ports are published on.")
    env: dict[str, str] = Field(default_factory=dict, description="Plain (non-secret) environment for both colors.")
    healthCheck: HealthCheck = Field(default_factory=lambda: HealthCheck())
    standby: Literal["keep", "stop"] = Field("keep", description="keep: the previous color stays running for rollback.")
    drainSeconds: float = Field(30.0, ge=0, le=3600, description="With standby: stop, longest wait for the old color's connections to end.")
    marker: Path | None = Field(None, description="File naming the live color. Default /var/lib/bluegreen/<name>/active.")
    nginx: NginxSpec = Field(default_factory=lambda: NginxSpec())
    network: str | None = Field(None, description="Docker network the containers join (e.g. the one MongoDB/Redis/Qdrant are on).")
    restartPolicy: Literal["no", "always", "unless-stopped", "on-failure"] = "unless-stopped"
    stopTimeoutSeconds: int = Field(10, ge=0, le=600)
    labels: dict[str, str] = Field(default_factory=dict, description="Extra container labels (not part of the bluegreen.* namespace).")
    secrets: SecretsSpec | None = Field(
        None, description="Secret env resolved at deploy time (values never logged; versions are part of the revision)."
    )

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        if not IMAGE_RE.match(v):
            raise ValueError(f"{v!r} is not a valid image reference (name[:tag] or name@sha256:<64 hex>)")
        return v

    @field_validator("bindAddress")
    @classmethod
    def _addr(cls, v: str) -> str:
        try:
            ipaddress.ip_address(v)
        except ValueError:
            raise ValueError(f"{v!r} is not an IP address") from None
        return v

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        out: dict[str, str] = {}
        for k, val in v.items():
            if not isinstance(k, str) or not ENV_NAME_RE.match(k):
                raise ValueError(f"{k!r} is not a valid environment variable name")
            if k.startswith("BLUEGREEN_"):
                raise ValueError(f"{k} is reserved: the controller sets BLUEGREEN_* itself")
            if isinstance(val, (dict, list)) or val is None:
                raise ValueError(f"env {k} must be a string, number or boolean")
            out[k] = str(val).lower() if isinstance(val, bool) else str(val)
        return out

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            if k.startswith("bluegreen.") and k != "bluegreen.test":
                raise ValueError(f"label {k!r} is reserved (bluegreen.* is the controller's)")
        return v


class BlueGreenApp(_Model):
    apiVersion: Literal["bluegreen/v1"]
    kind: Literal["BlueGreenApp"]
    metadata: Metadata
    spec: AppSpec

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def marker_path(self) -> Path:
        return self.spec.marker or Path("/var/lib/bluegreen") / self.name / "active"

    @property
    def upstream_file(self) -> Path:
        return self.spec.nginx.upstreamFile or Path("/etc/nginx/conf.d") / f"{self.name}.upstream.conf"

    @property
    def flag_file(self) -> Path:
        return self.spec.nginx.flagFile or self.upstream_file.parent / f"{self.name}.green"

    def container_name(self, color: Color) -> str:
        return f"{self.name}-{color}"

    def generation(self) -> str:
        """Hash of the whole desired document: status reports which one it last observed."""
        return _digest(self.model_dump(mode="json"))

    def revision(self, color: Color, extra: dict[str, str] | None = None) -> str:
        """Hash of everything that shapes a color's container; a differing hash means recreate.

        `extra` carries inputs known only at deploy time (secret versions), never secret values.
        """
        s = self.spec
        return _digest(
            {
                "image": s.image,
                "env": s.env,
                "containerPort": s.containerPort,
                "hostPort": s.ports.of(color),
                "bindAddress": s.bindAddress,
                "network": s.network,
                "restartPolicy": s.restartPolicy,
                "labels": s.labels,
                "extra": extra or {},
            }
        )


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def _one_line(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "document"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        elif e["type"] == "missing":
            msg = "required field missing"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def parse_app(text: str, source: str) -> BlueGreenApp:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(f"{source}:{where}: invalid YAML: {problem}") from None
    if not isinstance(doc, dict):
        raise SpecError(f"{source}: expected a BlueGreenApp mapping, got {type(doc).__name__}")
    try:
        return BlueGreenApp.model_validate(doc)
    except ValidationError as e:
        raise SpecError(f"{source}: {_one_line(e)}") from None


def load_app(path: Path) -> BlueGreenApp:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"{path}: cannot read: {e}") from None
    return parse_app(text, str(path))


def json_schema() -> dict[str, Any]:
    schema = BlueGreenApp.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "BlueGreenApp"
    return schema
