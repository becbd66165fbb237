"""What the controller needs of a spec without pydantic or PyYAML: colors, the path rules, and the rules that derive
an app's files and hashes from its fields.

The pydantic models (`controller/spec/app.py`, `controller/spec/resources.py`) validate a spec; these mixins give them their
derived properties, and give the same properties to the validated form a cache hit returns
(`controller/spec/cache.py`), so a cron run whose specs did not change loads neither the models nor PyYAML.
Everything here reads fields only; nothing validates.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

if TYPE_CHECKING:
    from controller.spec.app import AppSpec, Metadata

# The PATH a deploy check's command runs with (drivers/gates.py); the spec directory finds commands on it.
CHECK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOOK_TIMEOUT_DEFAULT = 600.0  # a hook's timeoutSeconds when the spec does not say (spec.app.HookSpec)

Color = Literal["blue", "green"]
COLORS: tuple[Color, Color] = ("blue", "green")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # an environment variable's name (spec.env, secrets)

# Paths the controller writes as root, and that end up inside Nginx config (the flag file is tested by
# `if (-f ...)` in the site; the include's comment names it): one conservative character set, so that no
# value can end a directive (`;`, `{`, `}`, a newline), open a quote, start a comment or expand a `$variable`.
PATH_CHARS = "A-Za-z0-9._,+=@~:-"
_PATH_COMPONENT_RE = re.compile(f"^[{PATH_CHARS}]+$")
PATH_PATTERN = f"^(/[{PATH_CHARS}]+)+$"
PATH_MAX = 1024

# spec.resources sizes (controller/spec/resources.py validates them): binary multiples, like `docker run --memory`.
KIB, MIB, GIB = 1024, 1024**2, 1024**3
_UNITS = {"k": KIB, "m": MIB, "g": GIB}
SIZE_PATTERN = r"^[0-9]{1,15}[kKmMgG]$"
_SIZE_RE = re.compile(SIZE_PATTERN)
MEMORY_MIN = 6 * MIB  # Docker's own minimum for --memory; below it `docker run` fails
MEMORY_MAX = 1024 * GIB  # more than any single host this controller runs on: a typo, not a limit


def _bad_char(v: str) -> str:
    """The first character of `v` outside the safe path set, shown so that a control character is visible."""
    for ch in v:
        if ch != "/" and not _PATH_COMPONENT_RE.match(ch):
            return ascii(ch) if not ch.isprintable() or ch.isspace() else repr(ch)
    return ""


def check_path(v: object, what: str = "path") -> str:
    """A path the controller writes: absolute, normalised (no `.`, `..`, `//`, trailing `/`), safe characters.

    Returns it unchanged; raises ValueError with a one-line reason. Also used for `--state-dir`.
    """
    if isinstance(v, Path):
        v = str(v)  # programmatic use; Path() already dropped `//` and `.`, so those are checked on str input
    if not isinstance(v, str):
        raise ValueError(f"{what} must be a string")
    if not v.startswith("/"):
        raise ValueError(f"{v!r} must be an absolute path")
    if len(v) > PATH_MAX:
        raise ValueError(f"{what} is longer than {PATH_MAX} characters")
    bad = _bad_char(v)
    if bad:
        raise ValueError(
            f"{v!r} contains {bad}: paths the controller writes (and Nginx reads) may only hold letters, digits, / and . _ , + = @ ~ : -"
        )
    parts = v.split("/")[1:]
    if v == "/" or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"{v!r} is not a normalised absolute path (no empty, '.' or '..' component, no trailing '/')")
    return v


def canonical_ip(text: str | None) -> str:
    """The canonical form of an IP address as Docker or a human wrote it ('' for none; unparsable text as is)."""
    if not text:
        return ""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def ip_address(v: str) -> str:
    """A spec's bind address in canonical form (Docker reports the HostIp it was given, and the planner compares
    it with this); ValueError naming the text otherwise."""
    try:
        return str(ipaddress.ip_address(v))
    except ValueError:
        raise ValueError(f"{v!r} is not an IP address") from None


def other(color: Color) -> Color:
    return "green" if color == "blue" else "blue"


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def parse_size(value: object, field: str) -> int:
    """Bytes of a size written as `<digits><k|m|g>` (either case); ValueError with a one-line reason."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{field} must be a size such as 512m or 1g")
    if not isinstance(value, str):
        raise ValueError(f"{field} {value!r} has no unit: write it as <digits>k, m or g (e.g. 512m, 1g)")
    if not _SIZE_RE.match(value):
        raise ValueError(
            f"{field} {value!a} is not a size: write <digits> then k, m or g (binary: 1g = 1024m; no fraction, sign or 'b')"
        )
    n = int(value[:-1]) * _UNITS[value[-1].lower()]
    if n == 0:
        raise ValueError(f"{field} must be more than 0 (omit the field for no limit)")
    if n < MEMORY_MIN:
        raise ValueError(f"{field} {value} is below Docker's minimum of 6m")
    if n > MEMORY_MAX:
        raise ValueError(f"{field} {value} is more than 1024g")
    return n


def human(n: int | float) -> str:
    """Bytes as people read them in a message: 1.5 GiB, 812 MiB, 64 KiB (one decimal above 10 units: none)."""
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if abs(n) >= size:
            v = n / size
            return f"{v:.1f} {unit}" if abs(v) < 10 and v != int(v) else f"{v:.0f} {unit}"
    return f"{int(n)} B"


class PortsRules:
    """`spec.ports` (controller/spec/app.py `Ports`)."""

    if TYPE_CHECKING:
        blue: int
        green: int

    def of(self, color: Color) -> int:
        return self.blue if color == "blue" else self.green


class ResourcesRules:
    """`spec.resources` (controller/spec/resources.py `Resources`): the limits in Docker's units."""

    if TYPE_CHECKING:
        memory: str | None
        memoryReservation: str | None
        cpus: float | None
        pidsLimit: int | None

    @property
    def memory_bytes(self) -> int | None:
        return None if self.memory is None else parse_size(self.memory, "memory")

    @property
    def reservation_bytes(self) -> int | None:
        return None if self.memoryReservation is None else parse_size(self.memoryReservation, "memoryReservation")

    @property
    def nano_cpus(self) -> int | None:
        return None if self.cpus is None else round(self.cpus * 1e9)

    def limits(self) -> dict[str, Any]:
        """The limits that are set, as written (for the revision hash and status); {} when none is."""
        out: dict[str, Any] = {"memory": self.memory, "memoryReservation": self.memoryReservation, "cpus": self.cpus, "pidsLimit": self.pidsLimit}
        return {k: v for k, v in out.items() if v is not None}

    def revision_input(self) -> dict[str, int]:
        """The limits in Docker's units (bytes, nano-CPUs): `1g` and `1024m` are the same revision."""
        out = {"memory": self.memory_bytes, "memoryReservation": self.reservation_bytes, "nanoCpus": self.nano_cpus, "pidsLimit": self.pidsLimit}
        return {k: v for k, v in out.items() if v is not None}

    def describe(self) -> str:
        """`memory=1g cpus=1.5 ...`, or "" when no limit is set."""
        return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.limits().items())


class AppRules:
    """A `BlueGreenApp`'s derived files and hashes (controller/spec/app.py `BlueGreenApp`)."""

    if TYPE_CHECKING:
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

    @property
    def access_log(self) -> Path:
        v = self.spec.verify
        return (v.accessLog if v is not None else None) or Path("/var/log/nginx") / f"bluegreen-{self.name}.access.log"

    @property
    def preview_flag_file(self) -> Path:
        """switch: flag: present = requests that ask for the preview go to the idle color (nginx/ tests `@FLAG@.preview`)."""
        return self.flag_file.with_name(self.flag_file.name + ".preview")

    @property
    def maintenance_flag_file(self) -> Path:
        """switch: flag: present = the site answers every public request with 503 and the maintenance page; its content
        is the message the page shows (nginx/ tests `@FLAG@.maintenance`)."""
        return self.flag_file.with_name(self.flag_file.name + ".maintenance")

    def written_paths(self) -> dict[str, Path]:
        """Every file the controller writes for this app, by the spec field that names it (defaults included)."""
        out = {"spec.marker": self.marker_path, "spec.nginx.upstreamFile": self.upstream_file}
        if self.spec.nginx.switch == "flag":
            out["spec.nginx.flagFile"] = self.flag_file
            out["spec.nginx.flagFile + .preview"] = self.preview_flag_file
            out["spec.nginx.flagFile + .maintenance"] = self.maintenance_flag_file
        if self.spec.secrets is not None and self.spec.secrets.envFile is not None:
            out["spec.secrets.envFile"] = self.spec.secrets.envFile
        return out

    def container_name(self, color: Color) -> str:
        return f"{self.name}-{color}"

    def generation(self) -> str:
        """Hash of the whole desired document: status reports which one it last observed."""
        return _digest(cast(Any, self).model_dump(mode="json"))

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
                # Only when a limit is set: revisions of apps without limits stay what they were (no redeploy).
                **({"resources": lim} if s.resources is not None and (lim := s.resources.revision_input()) else {}),
            }
        )


_App = TypeVar("_App", bound=AppRules)


def preview_app(app: _App) -> _App:
    """`app` as the preview release sees it: image and env of spec.preview, no preview. Its `revision(idle)` is the
    revision the idle color runs for the preview, and equals the promoted spec's revision for that color whenever
    the promotion carries the same image and effective env (docs/spec.md#preview): then promotion is a switch."""
    pv = app.spec.preview
    if pv is None:
        return app
    spec = app.spec.model_copy(update={"image": pv.image, "env": {**app.spec.env, **pv.env}, "preview": None})
    return cast(Any, app).model_copy(update={"spec": spec})  # type: ignore[no-any-return]
