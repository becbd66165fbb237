"""Desired state: the `BlueGreenApp` document operators commit, and how it is loaded.

Unknown fields are rejected everywhere (a typo must not silently become a default).
`reconcile --schema` regenerates the JSON Schema shipped for editors.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
import yaml.composer
import yaml.constructor
import yaml.nodes
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from controller.kernel import imageref
from controller.kernel.errors import SpecError, one_line
from controller.kernel.imageref import ImageRef
from controller.spec.base import (  # noqa: F401  (re-exported: the pydantic-free part; pyproject.toml: implicit_reexport)
    CHECK_PATH,
    COLORS,
    ENV_NAME_RE,
    HOOK_TIMEOUT_DEFAULT,
    PATH_CHARS,
    PATH_MAX,
    PATH_PATTERN,
    AppRules,
    Color,
    PortsRules,
    _digest,
    canonical_ip,
    check_path,
    ip_address,
    other,
    preview_app,
)
from controller.spec.resources import Resources

NAME_RE = r"^[a-z0-9]([a-z0-9-]{0,48}[a-z0-9])?$"

Port = Annotated[int, Field(ge=1, le=65535)]

# healthCheck.path: an RFC 3986 path-absolute with an optional query, in printable ASCII.
_PCHAR = r"A-Za-z0-9\-._~!$&'()*+,;=:@"
HEALTH_PATH_PATTERN = f"^/(?:[{_PCHAR}/]|%[0-9A-Fa-f]{{2}})*(?:\\?(?:[{_PCHAR}/?]|%[0-9A-Fa-f]{{2}})*)?$"
_HEALTH_PATH_RE = re.compile(HEALTH_PATH_PATTERN)
# Docker's network name grammar; host/none/container:<id> are refused separately (see AppSpec._network).
NETWORK_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Metadata(_Model):
    name: str = Field(pattern=NAME_RE, description="[a-z0-9-]; containers are named <name>-blue and <name>-green.")


class Ports(PortsRules, _Model):
    blue: Port = Field(18081, description="Host port of the blue container.")
    green: Port = Field(18082, description="Host port of the green container.")

    @model_validator(mode="after")
    def _distinct(self) -> Ports:
        if self.blue == self.green:
            raise ValueError(f"ports.blue and ports.green must differ (both are {self.blue})")
        return self


class HealthCheck(_Model):
    path: str = Field(
        "/actuator/health",
        max_length=1024,
        json_schema_extra={"pattern": HEALTH_PATH_PATTERN},
        description="HTTP path probed on the container's host port: starts with /, RFC 3986 path[?query] characters only.",
    )
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

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        # Checked here, not by the HTTP client at probe time (a tab made httpx raise InvalidURL mid-pass).
        if not v.startswith("/"):
            raise ValueError(f"{v!r} must start with /")
        if not _HEALTH_PATH_RE.match(v):
            bad = next((ch for ch in v if not re.match(f"[{_PCHAR}/?%]", ch)), None)
            why = f"contains {bad!a}" if bad else "has a '%' not followed by two hex digits"
            raise ValueError(f"{v!a} is not a URL path: it {why} (RFC 3986 path[?query] characters only; percent-encode others)")
        return v


class NginxSpec(_Model):
    upstreamFile: Path | None = Field(
        None,
        json_schema_extra={"pattern": PATH_PATTERN},
        description="Include written by the controller (`upstream <name> {...}`). Default /etc/nginx/conf.d/<name>.upstream.conf."
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
        json_schema_extra={"pattern": PATH_PATTERN},
        description="switch: flag: present = green serves, absent = blue serves (the site tests it with `if (-f ...)`). "
        "Default <upstreamFile's directory>/<name>.green.",
    )

    @field_validator("upstreamFile", "flagFile", mode="before")
    @classmethod
    def _paths(cls, v: Any) -> Any:
        return None if v is None else check_path(v)

    @field_validator("testCommand", "reloadCommand")
    @classmethod
    def _argv(cls, v: list[str]) -> list[str]:
        if not v[0]:
            raise ValueError("the command name must not be empty")
        for arg in v:
            if "\0" in arg:
                raise ValueError(f"{arg!a} contains a NUL byte (no program argument can)")
        return v


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
        None,
        json_schema_extra={"pattern": PATH_PATTERN},
        description="Also write the resolved env (spec.env + secrets) here, mode 0600, atomically, when a color is created."
    )

    @field_validator("envFile", mode="before")
    @classmethod
    def _abs(cls, v: Any) -> Any:
        return None if v is None else check_path(v)


class PreviewSpec(_Model):
    """spec.preview: the next release, run on the idle color for requests that ask for it (see controller/app/preview.py)."""

    image: str = Field(description="Image of the preview release; must differ from spec.image. Promotion: make it spec.image.")
    env: dict[str, str] = Field(
        default_factory=dict, description="Environment of the preview only, over spec.env (a key here wins over the same key there)."
    )

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        return imageref.checked(v)

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, v: Any) -> Any:
        return AppSpec._env(v)  # the same names, reserved prefix and value rules as spec.env
# Deploy gates (issue 12 items 2-3): checks and hooks between "healthy" and "takes traffic". -----------------
GATE_TIMEOUT_MAX = 86_400.0


def _check_argv(v: list[str], what: str) -> list[str]:
    """A program and its arguments, run without a shell: a non-empty program name, no NUL byte anywhere."""
    if not v or not v[0]:
        raise ValueError(f"{what} must name a program (an empty command runs nothing)")
    for arg in v:
        if "\0" in arg:
            raise ValueError(f"{arg!a} contains a NUL byte (no program argument can)")
    return v


class HttpCheck(_Model):
    path: str = Field(
        max_length=1024,
        json_schema_extra={"pattern": HEALTH_PATH_PATTERN},
        description="HTTP path asked on the new color's host port (same grammar as healthCheck.path).",
    )
    expectStatus: int = Field(200, ge=100, le=599, description="Status code the check needs.")
    bodyContains: str | None = Field(
        None, min_length=1, max_length=1024, description="Text the body (read up to 64 KiB) must contain."
    )

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return HealthCheck._path(v)


class BeforeSwitchCheck(_Model):
    http: HttpCheck | None = Field(None, description="GET the new color (bounded read, like the health check).")
    command: list[str] | None = Field(
        None,
        description="A host command, no shell; BLUEGREEN_TARGET_URL/HOST/PORT name the new color. Exit 0 passes.",
    )
    timeoutSeconds: float = Field(30.0, gt=0, le=3600, description="How long the check may take.")

    @field_validator("command")
    @classmethod
    def _argv(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else _check_argv(v, "command")

    @model_validator(mode="after")
    def _one(self) -> BeforeSwitchCheck:
        if (self.http is None) == (self.command is None):
            raise ValueError("a check needs exactly one of http or command")
        return self


class ChecksSpec(_Model):
    beforeSwitch: list[BeforeSwitchCheck] = Field(
        default_factory=list, max_length=32, description="Run against the new color once healthy, before it takes traffic."
    )


class HookSpec(_Model):
    command: list[str] = Field(
        description="Command of a one-off container of the new image (replaces its entrypoint; no shell unless you name one)."
    )
    timeoutSeconds: float = Field(HOOK_TIMEOUT_DEFAULT, gt=0, le=GATE_TIMEOUT_MAX, description="The container is killed and removed after this long.")

    @field_validator("command")
    @classmethod
    def _argv(cls, v: list[str]) -> list[str]:
        return _check_argv(v, "command")


class BeforeSwitchHook(HookSpec):
    maintenance: bool = Field(
        False,
        strict=True,
        description="Wrap the migration in maintenance (nginx.switch: flag): the site answers 503 from just before the hook "
        "until the new color serves; a failed hook or check ends it and the old color serves again (it must still work "
        "on the data as the hook left it).",
    )


class HooksSpec(_Model):
    beforeSwitch: BeforeSwitchHook | None = Field(
        None, description="Once per revision, before the switch; a non-zero exit fails the deploy."
    )
    afterSwitch: HookSpec | None = Field(None, description="Once per revision, after a successful switch; does not gate it.")
# Maintenance (controller/app/rules/maintenance.py; the site of nginx/ answers it). -------------------------------------
MAINTENANCE_MESSAGE_MAX = 500
# Put into the HTML page and inside a JSON string by nginx's SSI as written: nothing HTML or JSON would read as markup.
_MESSAGE_REFUSED = re.compile(r'["\\<>&\x00-\x1f\x7f-\x9f\u2028\u2029]')


class MaintenanceSpec(_Model):
    enabled: bool = Field(
        False, strict=True, description="While true the public site answers every request with 503 and the maintenance page."
    )
    message: str | None = Field(
        None,
        min_length=1,
        max_length=MAINTENANCE_MESSAGE_MAX,
        description='Shown on the maintenance page and in its JSON answer; one line, without " \\ < > & (the default page '
        "has its own text).",
    )

    @field_validator("message")
    @classmethod
    def _message(cls, v: str | None) -> str | None:
        if v is not None and (bad := _MESSAGE_REFUSED.search(v)) is not None:
            raise ValueError(
                f"message contains {bad.group()!a}: it goes into the page and its JSON as written, so one line without "
                '" \\ < > & or control characters'
            )
        return v


PROM_PLACEHOLDERS = ("{app}", "{color}", "{revision}")  # replaced in verify.prometheus.query (docs/spec.md)


class PrometheusVerify(_Model):
    """verify.prometheus: an instant query asked during the window; one number above `max` fails the new color."""

    url: str = Field(
        max_length=1024,
        json_schema_extra={"pattern": r"^https?://[^/@?#\s]+(/[^?#@\s]*)?$"},
        description="Prometheus base URL (http or https, no credentials, no query); GET <url>/api/v1/query is asked.",
    )
    query: str = Field(
        min_length=1,
        max_length=4096,
        description="PromQL instant query; {app}, {color} and {revision} are replaced by the judged color's. It must "
        "answer one number (a scalar or a one-sample vector).",
    )
    max: float = Field(ge=0, allow_inf_nan=False, description="The new color fails verification when the query answers more than this.")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        # Checked here, not only by the schema pattern: credentials in the URL would reach logs and status.
        m = re.fullmatch(r"(https?)://([^/?#\s]+)(/[^?#\s]*)?", v)
        if m is None:
            raise ValueError("must be an http:// or https:// URL without query or fragment")
        if "@" in v:
            raise ValueError("must not carry credentials (user:password@)")
        return v.rstrip("/")

    @field_validator("query")
    @classmethod
    def _query(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        if any(ord(ch) < 32 and ch not in "\t\n" for ch in v):
            raise ValueError("must not contain control characters")
        return v


class VerifySpec(_Model):
    """Post-switch verification (docs/spec.md#verify): judge the new color for a window after each cutover."""

    windowSeconds: float = Field(60.0, gt=0, le=3600, description="After a cutover, judge the new color this long.")
    maxErrorRate: float = Field(0.05, ge=0, lt=1, description="Largest share of 5xx among the requests Nginx sent to the new color.")
    minRequests: int = Field(20, ge=1, le=1_000_000, description="Fewer requests than this: the error rate (and p99) is not judged.")
    maxLatencyP99Ms: float | None = Field(
        None, gt=0, le=600_000, description="Optional: the p99 upstream response time (ms) the new color may not exceed."
    )
    healthFailures: int = Field(3, ge=1, le=1000, description="Consecutive failed health probes of the new color that fail it.")
    accessLog: Path | None = Field(
        None,
        json_schema_extra={"pattern": PATH_PATTERN},
        description="The JSON-lines access log the site writes (docs/nginx.md). Default /var/log/nginx/bluegreen-<name>.access.log.",
    )
    prometheus: PrometheusVerify | None = Field(
        None, description="Optional: an instant query asked during the window; an answer above its max fails the new color."
    )

    @field_validator("accessLog", mode="before")
    @classmethod
    def _log(cls, v: Any) -> Any:
        return None if v is None else check_path(v)


class AppSpec(_Model):
    image: str = Field(description="Image reference: name[:tag] or name@sha256:digest.")
    activeColor: Color
    containerPort: Port = Field(8081, description="Port the app listens on inside the container.")
    ports: Ports = Field(default_factory=lambda: Ports())
    bindAddress: str = Field(
        "127.0.0.1", description="Host address the color ports are published on (a loopback address unless exposeBeyondLoopback)."
    )
    exposeBeyondLoopback: bool = Field(
        False,
        description="Allow a non-loopback bindAddress. Such a port bypasses Nginx (Basic Auth, the actuator deny) and, "
        "through Docker's DNAT rules, host firewalls such as ufw.",
    )
    env: dict[str, str] = Field(default_factory=dict, description="Plain (non-secret) environment for both colors.")
    healthCheck: HealthCheck = Field(default_factory=lambda: HealthCheck())
    standby: Literal["keep", "stop"] = Field("keep", description="keep: the previous color stays running for rollback.")
    drainSeconds: float = Field(30.0, ge=0, le=3600, description="With standby: stop, longest wait for the old color's connections to end.")
    marker: Path | None = Field(
        None, json_schema_extra={"pattern": PATH_PATTERN}, description="File naming the live color. Default /var/lib/bluegreen/<name>/active."
    )
    nginx: NginxSpec = Field(default_factory=lambda: NginxSpec())
    network: str | None = Field(
        None,
        pattern=NETWORK_PATTERN,
        description="Docker network the containers join (e.g. the one MongoDB/Redis/Qdrant are on); not host, none or container:<id>.",
    )
    restartPolicy: Literal["no", "always", "unless-stopped", "on-failure"] = "unless-stopped"
    stopTimeoutSeconds: int = Field(10, ge=0, le=600)
    labels: dict[str, str] = Field(default_factory=dict, description="Extra container labels (not part of the bluegreen.* namespace).")
    secrets: SecretsSpec | None = Field(
        None, description="Secret env resolved at deploy time (values never logged; versions are part of the revision)."
    )
    # Failover (docs/spec.md "Failover"; the rule: controller/app/failover.py).
    failover: Literal["none", "previous"] = Field(
        "none",
        description="previous: when the live color fails its health check for failoverAfterSeconds and the other color "
        "runs the revision that served before it and passes its check, route to it (until the spec changes).",
    )
    failoverAfterSeconds: float = Field(
        10.0, ge=1, le=3600, description="With failover: previous, how long the live color must fail before traffic moves."
    )
    preview: PreviewSpec | None = Field(
        None,
        description="Run this release on the idle color for requests with header X-Bluegreen-Preview: 1 or cookie "
        "bluegreen_preview=1 (the site of nginx/, switch: flag); the active color keeps serving everyone else.",
    )
    checks: ChecksSpec | None = Field(None, description="Checks the new color must pass before it takes traffic (docs/spec.md).")
    hooks: HooksSpec | None = Field(None, description="One-off containers of the new image around the switch, e.g. migrations.")
    maintenance: MaintenanceSpec | None = Field(
        None,
        description="Maintenance mode of the site of nginx/ (nginx.switch: flag): every public request answered with 503, "
        "Retry-After and the maintenance page while enabled; the colors keep running.",
    )
    # Image pruning (controller/app/steps/prune.py; which images stay: app/rules/pruning.py, store/releases.py): not part
    # of the revision, it shapes no container.
    keepImages: int = Field(
        3,
        strict=True,  # `true` or "3" is a mistake, not 1 or 3
        ge=1,
        le=10_000,
        description="After a converged pass, unused images of this app's repository are removed, except the images "
        "of the N most recent releases and any image created or first seen after the newest release took traffic; "
        "images any container uses (any app, running or stopped), the spec's image and a preview's are never removed.",
    )
    resources: Resources | None = Field(
        None,
        description="Docker limits for both colors (part of the revision) and the capacity check before a new color starts.",
    )
    verify: VerifySpec | None = Field(
        None, description="Post-switch verification with automatic switch-back (absent: the switch is the end of a deploy)."
    )
    dependsOn: list[Annotated[str, Field(pattern=NAME_RE)]] | None = Field(
        None,
        description="Accessories (kind: Accessory, same directory) that must be healthy before a new color starts; "
        "the live color is never stopped or moved because of them.",
    )

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        return imageref.checked(v)

    @field_validator("dependsOn")
    @classmethod
    def _depends(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError("dependsOn names an accessory twice")
        return v

    @field_validator("bindAddress")
    @classmethod
    def _addr(cls, v: str) -> str:
        return ip_address(v)

    @field_validator("marker", mode="before")
    @classmethod
    def _marker(cls, v: Any) -> Any:
        return None if v is None else check_path(v)

    @field_validator("network", mode="before")
    @classmethod
    def _network(cls, v: Any) -> Any:
        # Host networking ignores published ports, `none` has none, and container:<id> shares another's:
        # in every case nothing answers on ports.<color>, so the app could never pass its health check.
        if isinstance(v, str) and (v in ("host", "none") or v.startswith("container:")):
            raise ValueError(f"{v!r} is not allowed: the app must publish its port on bindAddress (use a bridge network)")
        return v

    @model_validator(mode="after")
    def _exposure(self) -> AppSpec:
        if not ipaddress.ip_address(self.bindAddress).is_loopback and not self.exposeBeyondLoopback:
            raise ValueError(
                f"bindAddress {self.bindAddress} is not a loopback address: the color ports would be reachable from "
                "other hosts past Nginx (no Basic Auth, actuator included) and, through Docker's DNAT rules, past "
                "ufw/iptables INPUT rules; set exposeBeyondLoopback: true if that is intended"
            )
        return self

    @model_validator(mode="after")
    def _failover_standby(self) -> AppSpec:
        if self.failover == "previous" and self.standby == "stop":
            raise ValueError("failover: previous needs standby: keep (a stopped previous color cannot take traffic)")
        return self

    @model_validator(mode="after")
    def _preview(self) -> AppSpec:
        if self.preview is None:
            return self
        if ImageRef.parse(self.preview.image) == ImageRef.parse(self.image):
            raise ValueError(
                f"preview.image {self.preview.image} is the live image ({self.image}): a preview must be another release "
                "(to promote it, set image to it and drop preview)"
            )
        if self.nginx.switch != "flag":
            raise ValueError("preview needs nginx.switch: flag (the preview route is a flag file the site of nginx/ tests)")
        return self

    @model_validator(mode="after")
    def _maintenance(self) -> AppSpec:
        wraps = self.hooks is not None and self.hooks.beforeSwitch is not None and self.hooks.beforeSwitch.maintenance
        if (self.maintenance is not None or wraps) and self.nginx.switch != "flag":
            what = "maintenance" if self.maintenance is not None else "hooks.beforeSwitch.maintenance"
            raise ValueError(f"{what} needs nginx.switch: flag (maintenance is a flag file the site of nginx/ tests)")
        return self

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
            if val is None:
                raise ValueError(f"env {k} has no value (YAML null): write '' for an empty string")
            if isinstance(val, (dict, list)):
                raise ValueError(f"env {k} must be a string, number or boolean, not a {'mapping' if isinstance(val, dict) else 'list'}")
            if isinstance(val, str) and "\0" in val:
                raise ValueError(f"env {k} contains a NUL byte (no environment variable can)")
            out[k] = str(val).lower() if isinstance(val, bool) else str(val)
        return out

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            if k.startswith("bluegreen.") and k != "bluegreen.test":
                raise ValueError(f"label {k!r} is reserved (bluegreen.* is the controller's)")
        return v


class BlueGreenApp(AppRules, _Model):
    apiVersion: Literal["bluegreen/v1"]
    kind: Literal["BlueGreenApp"]
    metadata: Metadata
    spec: AppSpec

    @model_validator(mode="after")
    def _distinct_paths(self) -> BlueGreenApp:
        # One path for two roles turns one write into the other (the marker written as the flag file
        # switched Nginx to green, a color with no container); a path under another file cannot be written.
        items = list(self.written_paths().items())
        for i, (fa, pa) in enumerate(items):
            for fb, pb in items[i + 1 :]:
                if pa == pb:
                    raise ValueError(f"{fa} and {fb} are both {pa}: every file the controller writes needs a path of its own")
                for (f1, p1), (f2, p2) in (((fa, pa), (fb, pb)), ((fb, pb), (fa, pa))):
                    if p1 in p2.parents:
                        raise ValueError(f"{f2} ({p2}) is under {f1} ({p1}), which is a file the controller writes")
        return self


def _one_line(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        elif e["type"] == "missing":
            msg = "required field missing"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return one_line("; ".join(parts), 1000)


# YAML ------------------------------------------------------------------------------------------------
# A spec is small: these bounds refuse a hostile or broken file (a few hundred `[` made PyYAML's recursive
# composer raise RecursionError; nested aliases expand a 1 KB file to millions of nodes) as that file's error.
MAX_DEPTH = 32
MAX_NODES = 20_000
_STR = "tag:yaml.org,2002:str"
_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"
# Mappings whose scalars keep the text the operator wrote (YAML 1.1 typing turned 1.10 into 1.1, 01234 into
# 668, NO into false and 12:30:00 into 45000; the keys too: `ON: x` became `True: x`).
_VERBATIM = (("spec", "env"), ("spec", "labels"))


class _Loader(yaml.SafeLoader):
    """SafeLoader that bounds nesting and refuses duplicate keys (the last one silently won)."""

    _depth = 0

    def compose_node(self, parent: yaml.nodes.Node | None, index: int) -> yaml.nodes.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)  # type: ignore[no-untyped-call]
            node: yaml.nodes.Node | None = super().compose_node(parent, index)
            return node
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.nodes.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.nodes.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:
                continue  # `<<: *base` then a key of its own is an override, not a duplicate
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:
                continue  # unhashable: SafeConstructor says so below
            if first is not key_node:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {first.start_mark.line + 1})", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


def _check_size(root: yaml.nodes.Node) -> None:
    """Counts nodes as they expand (an alias counts at every use; a cycle never ends): bounded by MAX_NODES."""
    stack = [root]
    count = 0
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise SpecError(f"more than {MAX_NODES} YAML nodes once aliases are expanded (recursive or nested aliases?)")
        if isinstance(node, yaml.nodes.MappingNode):
            stack.extend(n for pair in node.value for n in pair)
        elif isinstance(node, yaml.nodes.SequenceNode):
            stack.extend(node.value)


def _child(node: yaml.nodes.Node, key: str) -> yaml.nodes.Node | None:
    if isinstance(node, yaml.nodes.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.nodes.ScalarNode) and k.value == key and isinstance(v, yaml.nodes.Node):
                return v
    return None


def _as_text(node: yaml.nodes.Node) -> yaml.nodes.Node:
    """A scalar as the string it was written as; null (nothing, `~`, `null`) stays null so the model refuses it."""
    if isinstance(node, yaml.nodes.ScalarNode) and node.tag not in (_STR, _NULL):
        return yaml.nodes.ScalarNode(_STR, node.value, node.start_mark, node.end_mark, style=node.style)
    return node


def _keep_text(loader: _Loader, root: yaml.nodes.Node) -> None:
    for path in _VERBATIM:
        node: yaml.nodes.Node | None = root
        for key in path:
            node = _child(node, key) if node is not None else None
        if isinstance(node, yaml.nodes.MappingNode):
            own = [(k, v) for k, v in node.value if k.tag != _MERGE]
            # `<<: *base` pairs in place, so that theirs keep their text too; merge semantics kept: a key of
            # the mapping's own wins over a merged one, a later merged one over an earlier (no duplicates left).
            loader.flatten_mapping(node)
            own_ids = {id(k) for k, _ in own}
            own_keys = {k.value for k, _ in own if isinstance(k, yaml.nodes.ScalarNode)}
            merged: dict[object, tuple[yaml.nodes.Node, yaml.nodes.Node]] = {}
            for k, v in node.value:
                if id(k) not in own_ids:
                    merged[k.value if isinstance(k, yaml.nodes.ScalarNode) else id(k)] = (k, v)
            pairs = [p for key, p in merged.items() if key not in own_keys] + own
            # New nodes, not retagged ones: an alias shares its node with the place it points at.
            node.value = [(_as_text(k), _as_text(v)) for k, v in pairs]


def _yaml_error(source: str, e: yaml.YAMLError) -> SpecError:
    mark = getattr(e, "problem_mark", None)
    where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    return SpecError(f"{source}:{where}: invalid YAML: {one_line(problem)}")


def load_yaml(text: str, source: str) -> Any:
    """One YAML document: bounded, duplicate keys refused, env/labels scalars kept as written."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        _check_size(root)
        _keep_text(loader, root)
        return loader.construct_document(root)
    except yaml.YAMLError as e:
        raise _yaml_error(source, e) from None
    except SpecError as e:
        raise SpecError(f"{source}: invalid YAML: {e}") from None
    finally:
        loader.dispose()


def parse_app(text: str, source: str) -> BlueGreenApp:
    try:
        doc = load_yaml(text, source)
        if not isinstance(doc, dict):
            raise SpecError(f"{source}: expected a BlueGreenApp mapping, got {type(doc).__name__}")
        try:
            return BlueGreenApp.model_validate(doc)
        except ValidationError as e:
            raise SpecError(f"{source}: {_one_line(e)}") from None
    except SpecError:
        raise
    except RecursionError:
        raise SpecError(f"{source}: nested too deeply to load") from None
    except Exception as e:  # one file's surprise must stay that file's error: the other apps go on
        raise SpecError(f"{source}: cannot load: {type(e).__name__}: {one_line(e)}") from None


def json_schema() -> dict[str, Any]:
    schema = BlueGreenApp.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "BlueGreenApp"
    return schema
