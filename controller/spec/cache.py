"""The validated-spec cache: a cron run whose spec files did not change loads neither PyYAML nor the spec models.

`<state-dir>/cache/specs/<key>.json` holds one validated `BlueGreenApp`, keyed by the sha256 of the spec file's
bytes, the controller version and the models' fingerprint (the shipped JSON schema and the source of the modules
that validate a spec: any change to them is a new key). At most MAX_ENTRIES entries: storing one removes the
oldest beyond that. An entry is read like every state file (controller/kernel/files.py: trusted directories, no
link followed, a regular file only, bounded) and checked as a whole (its key, a sha256 of its payload, its shape):
anything else — missing, torn, hand-edited, a link, a FIFO, another format — is a miss, and the spec is loaded and
validated as without a cache. Only `--once` (and `deploy --apply`) store entries, and only of valid apps put in
force (a run refused for its input writes nothing); `--plan` and `--status` read them and write nothing. The host
checks (nginx commands on PATH, paths outside
the state dir) run on every load, hit or not.

What a hit returns is the validated document in a form free of the models (`Record`, no pydantic): every field as the model holds
it (nested models as records, paths as `Path`), the rules of `controller/spec/base.py` (name, written paths,
generation, revision, `Ports.of`, the `Resources` limits), `model_dump`/`model_copy` for what the controller calls
on a spec. Before an entry is written, its decoded form is compared with the model (dump, generation, revisions,
written paths): an app the form cannot carry exactly is not cached.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from controller import __version__
from controller.kernel import files
from controller.kernel.errors import ControllerError
from controller.spec.base import COLORS, AppRules, PortsRules, ResourcesRules

if TYPE_CHECKING:
    from controller.spec.app import BlueGreenApp

FORMAT = 1
CACHE_DIR = Path("cache") / "specs"  # under the state dir
MAX_ENTRIES = 256  # a few per app and spec revision in use: far more than one host has
MAX_ENTRY_BYTES = 256 * 1024  # a spec is at most files.SPEC bytes of YAML; its entry a few KiB
SUFFIX = ".json"
# What a cached form depends on besides the file: the shipped schema and the code that validates a spec.
_PACKAGE = Path(__file__).resolve().parent.parent  # controller/
_FINGERPRINT_FILES = ("schema/bluegreen.schema.json", "spec/app.py", "spec/resources.py", "spec/base.py", "kernel/imageref.py", "spec/cache.py")
_fingerprint: str | None = None


class Corrupt(Exception):
    """An entry that is not a well-formed cached app (a miss)."""


class Record:
    """A validated model read back from the cache: its fields as attributes, read-only."""

    __slots__ = ("_fields", "_model")

    def __init__(self, model: str, fields: dict[str, Any]) -> None:
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_fields", fields)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # copy/pickle probe dunders before __init__ ran: never recurse into _fields
            raise AttributeError(name)
        try:
            return self._fields[name]
        except KeyError:
            raise AttributeError(f"{self._model} has no field {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{self._model} is frozen")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Record) and (self._model, self._fields) == (other._model, other._fields)

    __hash__ = None  # type: ignore[assignment]  # like the frozen models with dict fields: unhashable

    def __repr__(self) -> str:
        return f"{self._model}(cached, {', '.join(f'{k}={v!r}' for k, v in self._fields.items())})"

    def model_dump(self, *, mode: str = "python") -> dict[str, Any]:
        """As pydantic's `model_dump` of the model: "json" turns paths into strings."""
        out: dict[str, Any] = _dump(self, mode == "json")
        return out

    def model_copy(self, *, update: dict[str, Any] | None = None) -> Any:
        """As pydantic's `model_copy(update=...)`: the given fields replaced, nothing validated."""
        return type(self)(self._model, {**self._fields, **(update or {})})


class CachedApp(AppRules, Record):
    __slots__ = ()


class CachedPorts(PortsRules, Record):
    __slots__ = ()


class CachedResources(ResourcesRules, Record):
    __slots__ = ()


# The models with rules of their own (controller/spec/base.py); every other model is a plain Record.
RECORDS: dict[str, type[Record]] = {"BlueGreenApp": CachedApp, "Ports": CachedPorts, "Resources": CachedResources}


def _dump(v: Any, as_json: bool) -> Any:
    if isinstance(v, Record):
        return {k: _dump(x, as_json) for k, x in v._fields.items()}
    if isinstance(v, Path):
        return str(v) if as_json else v
    if isinstance(v, dict):
        return {k: _dump(x, as_json) for k, x in v.items()}
    if isinstance(v, list):
        return [_dump(x, as_json) for x in v]
    return v


def encode(v: Any) -> Any:
    """A validated model as tagged JSON: {"m": model, "f": fields}, {"p": path}, {"d": dict}, {"l": list}, scalars.

    Every JSON object is a tag, so no value can pass for one (a label named "m" stays data). ValueError for a
    value the cache cannot carry."""
    fields = getattr(type(v), "model_fields", None)
    if isinstance(fields, dict):  # a pydantic model (no pydantic import needed to tell)
        return {"m": type(v).__name__, "f": {k: encode(getattr(v, k)) for k in fields}}
    if isinstance(v, Path):
        return {"p": str(v)}
    if isinstance(v, dict):
        if not all(isinstance(k, str) for k in v):
            raise ValueError("a mapping with keys that are not strings")
        return {"d": {k: encode(x) for k, x in v.items()}}
    if isinstance(v, list):
        return {"l": [encode(x) for x in v]}
    if v is None or isinstance(v, (str, bool, int, float)):
        return v
    raise ValueError(f"a {type(v).__name__} value")


def decode(v: Any) -> Any:
    """The inverse of `encode`, as records; Corrupt for anything `encode` does not make."""
    if isinstance(v, dict):
        if v.keys() == {"m", "f"} and isinstance(v["m"], str) and isinstance(v["f"], dict):
            return RECORDS.get(v["m"], Record)(v["m"], {str(k): decode(x) for k, x in v["f"].items()})
        if len(v) == 1:
            tag, x = next(iter(v.items()))
            if tag == "p" and isinstance(x, str):
                return Path(x)
            if tag == "d" and isinstance(x, dict):
                return {str(k): decode(y) for k, y in x.items()}
            if tag == "l" and isinstance(x, list):
                return [decode(y) for y in x]
        raise Corrupt("an object that is no tag")
    if v is None or isinstance(v, (str, bool, int, float)):
        return v
    raise Corrupt(f"an untagged {type(v).__name__}")


def fingerprint() -> str | None:
    """The controller version and the models' schema and code (module doc); None when they cannot be read."""
    global _fingerprint
    if _fingerprint is None:
        h = hashlib.sha256(f"bluegreen-spec-cache {FORMAT} {__version__}".encode())
        try:
            for name in _FINGERPRINT_FILES:
                h.update(b"\0" + name.encode() + b"\0" + (_PACKAGE / name).read_bytes())
        except OSError:
            return None
        _fingerprint = h.hexdigest()
    return _fingerprint


class SpecCache:
    """The cache of one state dir (module doc). Never raises: a problem is a miss, or an entry not written."""

    def __init__(self, state_dir: Path, *, store: bool = True) -> None:
        self.dir = state_dir / CACHE_DIR
        self.writes = store  # False: read the cache, never write it (--plan, --status change nothing)
        self._staged: dict[Path, tuple[bytes, BlueGreenApp]] = {}

    def stage(self, file: Path, data: bytes, app: BlueGreenApp) -> None:
        """`app` was validated from `file` holding `data`: stored by `commit` if it is put in force."""
        if self.writes:
            self._staged[file] = (data, app)

    def commit(self, in_force: Mapping[Path, object]) -> None:
        """Store the staged apps that are in force: a run refused for its input writes nothing (a conflict, say)."""
        for file, (data, app) in self._staged.items():
            if in_force.get(file) is app:
                self.store(data, app)
        self._staged.clear()

    def key(self, data: bytes) -> str | None:
        fp = fingerprint()
        return None if fp is None else hashlib.sha256(fp.encode() + b"\0" + data).hexdigest()

    def load(self, data: bytes) -> BlueGreenApp | None:
        """The validated app of a spec file holding `data`, or None (a miss)."""
        key = self.key(data)
        if key is None:
            return None
        try:
            raw = files.read_bytes(self.dir / f"{key}{SUFFIX}", MAX_ENTRY_BYTES)
            if raw is None or isinstance(raw, files.Garbage):
                return None
            app = decode(json.loads(_payload(raw, key)))
        except (ControllerError, Corrupt, ValueError, TypeError, RecursionError):
            return None
        return cast("BlueGreenApp", app) if isinstance(app, CachedApp) else None

    def store(self, data: bytes, app: BlueGreenApp) -> bool:
        """Cache `app`, validated from a spec file holding `data`; False when it is not (cannot be, or not written)."""
        key = self.key(data)
        if key is None:
            return False
        try:
            payload = json.dumps(encode(app), separators=(",", ":"))
            if not same(cast(AppRules, decode(json.loads(payload))), app):
                return False
            entry = {"format": FORMAT, "key": key, "sha256": hashlib.sha256(payload.encode()).hexdigest(), "app": payload}
            files.write_atomic(self.dir / f"{key}{SUFFIX}", json.dumps(entry) + "\n", 0o600)
            files.trim(self.dir, MAX_ENTRIES, SUFFIX)
        except (ControllerError, Corrupt, ValueError, TypeError, RecursionError):
            return False
        return True


def _payload(raw: bytes, key: str) -> str:
    entry = json.loads(raw)
    if not isinstance(entry, dict) or entry.get("format") != FORMAT or entry.get("key") != key:
        raise Corrupt("not an entry of this key and format")
    payload = entry.get("app")
    if not isinstance(payload, str) or hashlib.sha256(payload.encode()).hexdigest() != entry.get("sha256"):
        raise Corrupt("payload does not match its sha256")
    return payload


def same(cached: AppRules, app: BlueGreenApp) -> bool:
    """Whether the cached form answers what the controller asks of a spec exactly as the model does."""
    c = cast(Any, cached)
    return (
        c.model_dump(mode="json") == app.model_dump(mode="json")
        and cached.generation() == app.generation()
        and all(cached.revision(color) == app.revision(color) for color in COLORS)
        and cached.written_paths() == app.written_paths()
    )
