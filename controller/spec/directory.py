"""The spec directory: which files are specs, which apps they declare, and which of them are in force.

One policy for every mode. `--once`, `--plan` and `--status` call `select` with nothing in force;
`--watch` calls it with the specs in force since the last read, so an invalid or conflicting edit of a
file leaves that file's last valid spec in force. Conflicts are data (`Conflict`), never sentences that
a caller has to parse back into app names.

The cron modes pass a `SpecCache` (controller/spec/cache.py): a file whose bytes were validated before is not
parsed or validated again (no PyYAML, no spec models); the host checks run either way.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from controller.kernel.errors import SpecError, one_line
from controller.kernel.files import read_spec
from controller.spec.base import CHECK_PATH
from controller.spec.cache import SpecCache

if TYPE_CHECKING:  # the models load with the first spec that is validated (not on a cache hit)
    from controller.spec.accessory import Accessory
    from controller.spec.app import BlueGreenApp

SUFFIXES = (".yaml", ".yml")


def spec_files(path: Path) -> list[Path]:
    """One file, or every *.yaml / *.yml directly in a directory (sorted, dotfiles skipped)."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and not p.name.startswith(".") and p.is_file())
    if path.is_file():
        return [path]
    raise SpecError(f"{path}: no such file or directory")


def _read_bytes(path: Path) -> bytes:
    try:
        # Root-equivalent: refused unless only root could have written it; read regular, bounded, non-blocking.
        return read_spec(path)
    except SpecError:
        raise
    except (OSError, ValueError) as e:
        raise SpecError(f"{path}: cannot read: {one_line(e)}") from None
    except Exception as e:  # whatever else reading one file raises is that file's error, not the run's
        raise SpecError(f"{path}: cannot read: {type(e).__name__}: {one_line(e)}") from None


def _text(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"{path}: cannot read: {one_line(e)}") from None


def _read(path: Path) -> str:
    return _text(path, _read_bytes(path))


def load_app(path: Path) -> BlueGreenApp:
    from controller.spec.app import parse_app

    return parse_app(_read(path), str(path))


@dataclass(frozen=True)
class Conflict:
    """Two apps that would fight over one resource (a name, a host port, a file the controller writes)."""

    apps: tuple[str, str]
    resource: str  # e.g. "port 127.0.0.1:18081", "file /var/lib/bluegreen/a/active"

    def __str__(self) -> str:
        return f"apps {self.apps[0]} and {self.apps[1]} both use {self.resource}"


def _resources(app: BlueGreenApp) -> dict[str, str]:
    """What an app holds for itself: a key per resource, and how to name it in a message."""
    s = app.spec
    out = {f"name {app.name}": f"name {app.name}"}
    for port in (s.ports.blue, s.ports.green):
        out[f"port {s.bindAddress}:{port}"] = f"port {s.bindAddress}:{port}"
    # Any file one app writes must not be any file another app writes, whatever role each gives it.
    for field_name, path in app.written_paths().items():
        out.setdefault(f"file {path}", f"{field_name.rsplit('.', 1)[-1]} {path}")
    return out


def conflicts(apps: list[BlueGreenApp]) -> list[Conflict]:
    found: list[Conflict] = []
    owner: dict[str, tuple[str, str]] = {}  # resource key -> (app, how that app names it)
    for app in apps:
        for key, label in sorted(_resources(app).items()):
            if key not in owner:
                owner[key] = (app.name, label)
                continue
            first, first_label = owner[key]
            shown = label if label == first_label else f"{label} ({first_label} of {first})"
            found.append(Conflict((first, app.name), shown))
    return found


def host_problem(app: BlueGreenApp) -> str | None:
    """The spec's Nginx commands must exist on this host before anything is changed for the app.

    Checked up front rather than when the switch runs: otherwise a deploy would create and start the new
    color, then fail at the switch (cron's PATH, /usr/bin:/bin, lacks /usr/sbin where nginx lives).
    """
    ng = app.spec.nginx
    for name, argv in (("testCommand", ng.testCommand), ("reloadCommand", ng.reloadCommand)):
        if shutil.which(argv[0]) is None:
            return f"nginx.{name}: {argv[0]}: command not found (PATH={os.environ.get('PATH', '')}; use an absolute path)"
    return check_command_problem(app)


def check_command_problem(app: BlueGreenApp) -> str | None:
    """Deploy gates: a check command must exist on the host, found on the PATH it will run with (CHECK_PATH)."""
    for n, check in enumerate(app.spec.checks.beforeSwitch if app.spec.checks is not None else []):
        if check.command is not None and shutil.which(check.command[0], path=CHECK_PATH) is None:
            return f"checks.beforeSwitch[{n}].command: {check.command[0]}: command not found (PATH={CHECK_PATH}; use an absolute path)"
    return None


def state_dir_problem(app: BlueGreenApp, state_dir: Path | None) -> str | None:
    """A file the app writes must not be one of the controller's own: the lock, the history, apps/*/ state.

    A marker beside them (`/var/lib/bluegreen/<app>/active`, the documented default) is fine.
    """
    if state_dir is None:
        return None
    root = os.path.normpath(os.path.abspath(state_dir))
    own = {root, os.path.join(root, "lock"), os.path.join(root, "history.jsonl"), os.path.join(root, "apps")}
    for field_name, path in app.written_paths().items():
        p = os.path.normpath(os.path.abspath(path))
        if p in own or p.startswith(os.path.join(root, "apps") + "/") or p.startswith(os.path.join(root, "history.jsonl")):
            return f"{field_name}: {path} is one of the controller's own files in the state dir {root} (lock, history, apps/)"
    return None


def load_file(f: Path, state_dir: Path | None = None) -> BlueGreenApp:
    """One spec file, parsed, validated and checked against this host; SpecError (one line) otherwise."""
    app = load_app(f)
    problem = host_problem(app) or state_dir_problem(app, state_dir)
    if problem:
        raise SpecError(f"{f}: {problem}")
    return app


def load_document(
    f: Path, state_dir: Path | None = None, cache: SpecCache | None = None, *, host: bool = True
) -> BlueGreenApp | Accessory:
    """One spec file of either kind (issue 13): `kind: Accessory`, else a BlueGreenApp as `load_file` loads it
    (from `cache` when these bytes were validated before).

    `host=False` (reconcile export): the spec is not checked against this host (its Nginx commands)."""
    data = _read_bytes(f)
    app = cache.load(data) if cache is not None else None
    if app is None:
        from controller.spec.accessory import kind_of, parse_accessory_doc
        from controller.spec.app import load_yaml, parse_app

        text = _text(f, data)
        try:
            doc = load_yaml(text, str(f))
        except RecursionError:
            raise SpecError(f"{f}: nested too deeply to load") from None
        if kind_of(doc) == "Accessory":
            assert isinstance(doc, dict)
            return parse_accessory_doc(doc, str(f))
        app = parse_app(text, str(f))
        if cache is not None:
            cache.stage(f, data, app)  # stored if it is put in force (select)
    problem = (host_problem(app) if host else None) or state_dir_problem(app, state_dir)
    if problem:
        raise SpecError(f"{f}: {problem}")
    return app


def _accessory_resources(acc: Accessory) -> dict[str, str]:
    s = acc.spec
    out = {f"name {acc.name}": f"name {acc.name}"}
    for port in s.ports.values():
        out[f"port {port}"] = f"host port {s.bindAddress}:{port}"
    for vol in s.volumes:
        out[f"volume {vol}"] = f"volume {vol}"
    return out


def accessory_problems(apps: list[BlueGreenApp], accessories: dict[Path, Accessory]) -> list[tuple[Path | None, str, str]]:
    """(file of the accessory or None for an app's, the name it is about, one-line message) per clash.

    Names are unique across both kinds (an accessory's container is its name; an app's are <name>-blue/-green);
    a host port is one owner's whatever the bind address (0.0.0.0 covers 127.0.0.1); a named volume belongs to
    one accessory. An app's dependsOn must name accessories only: since accessories depend on nothing, no cycle
    can form.
    """
    out: list[tuple[Path | None, str, str]] = []
    owner: dict[str, str] = {}
    for app in apps:
        owner[f"name {app.name}"] = f"app {app.name}"
        for color in ("blue", "green"):
            owner[f"name {app.name}-{color}"] = f"app {app.name} (container {app.name}-{color})"
        for port in (app.spec.ports.blue, app.spec.ports.green):
            owner[f"port {port}"] = f"app {app.name}"
    for f, acc in sorted(accessories.items()):
        for key, label in sorted(_accessory_resources(acc).items()):
            if key in owner:
                out.append((f, acc.name, f"{f}: accessory {acc.name} and {owner[key]} both use {label}"))
            else:
                owner[key] = f"accessory {acc.name}"
    names = {a.name for a in accessories.values()}
    app_names = {a.name for a in apps}
    for app in apps:
        for dep in app.spec.dependsOn or []:
            if dep in app_names:
                out.append((None, app.name, f"app {app.name}: spec.dependsOn: {dep!r} is an app; only accessories can be depended on"))
            elif dep not in names:
                out.append((None, app.name, f"app {app.name}: spec.dependsOn: {dep!r} is no accessory in this directory"))
    return out


def name_hint(path: Path) -> str:
    """The app an unloadable spec file is about: its metadata.name if that much parses, else the file stem."""
    try:
        import yaml

        from controller.kernel.files import read_text

        # The safe read: a refused spec may sit where others write (a FIFO must not hang the run).
        name = yaml.safe_load(read_text(path) or "")["metadata"]["name"]
    except Exception:  # any way a spec can be broken (or hostile): fall back to the file name
        name = None
    return name if isinstance(name, str) and 0 < len(name) <= 63 and name.isprintable() else path.stem


@dataclass(frozen=True)
class Problem:
    """Why one file's spec is not (or no longer) what is in force."""

    file: Path
    app: str | None  # the app it is about, when known
    message: str  # one line, naming the file
    conflict: Conflict | None = None


@dataclass
class Selection:
    """The outcome of reading the spec path: the apps in force by file, and every problem found."""

    apps_by_file: dict[Path, BlueGreenApp] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    accessories_by_file: dict[Path, Accessory] = field(default_factory=dict)  # kind: Accessory (issue 13)

    @property
    def accessories(self) -> list[Accessory]:
        return list(self.accessories_by_file.values())

    @property
    def apps(self) -> list[BlueGreenApp]:
        return list(self.apps_by_file.values())

    @property
    def rejected(self) -> list[str]:
        """App names (or file stems) whose spec as written is not in force."""
        return [p.app or p.file.stem for p in self.problems]


def select(
    path: Path,
    in_force: Mapping[Path, BlueGreenApp] | None = None,
    *,
    state_dir: Path | None = None,
    host: bool = True,
    cache: SpecCache | None = None,
) -> Selection:
    """Read `path` and decide what is in force (through `cache`, the state dir's spec cache, when given).

    A file that fails to load keeps its spec from `in_force` (watch mode) or is dropped (`in_force` empty).
    When two apps conflict, the side whose spec changed since `in_force` is refused (the edit that caused the
    conflict); when neither or both changed, both are refused. Raises SpecError when `path` itself is gone.
    `host=False` skips the checks against this host (`load_document`).
    """
    previous = dict(in_force or {})
    out = Selection()
    files = spec_files(path)
    candidate: dict[Path, BlueGreenApp] = {}
    accessories: dict[Path, Accessory] = {}
    for f in files:
        try:
            doc = load_document(f, state_dir, cache, host=host)
            if doc.kind == "Accessory":
                accessories[f] = doc
                continue
            candidate[f] = doc
        except SpecError as e:
            kept = previous.get(f)
            out.problems.append(Problem(f, kept.name if kept is not None else name_hint(f), str(e)))
            if kept is not None:
                candidate[f] = kept
        except RecursionError:
            # A deeply nested document: that file's problem, never the whole run's.
            kept = previous.get(f)
            out.problems.append(Problem(f, kept.name if kept is not None else f.stem, f"{f}: invalid YAML: nested too deeply"))
            if kept is not None:
                candidate[f] = kept
    for _ in range(len(candidate) + 1):
        found = conflicts(list(candidate.values()))
        if not found:
            break
        c = found[0]
        files_of = [f for f, a in candidate.items() if a.name in c.apps]
        changed = [f for f in files_of if previous.get(f) != candidate[f]]
        refuse = changed if 0 < len(changed) < len(files_of) else files_of
        for f in refuse:
            app = candidate[f]
            kept = previous.get(f)
            out.problems.append(Problem(f, app.name, f"{f}: {c}", conflict=c))
            others = [a for g, a in candidate.items() if g != f]
            if kept is not None and kept != app and not any(kept.name in k.apps for k in conflicts([kept, *others])):
                candidate[f] = kept  # the edit is refused; the last valid spec of this file stays in force
            else:
                del candidate[f]
    else:
        # Unreachable in practice (each round removes or reverts a side): never reconcile a conflict.
        bad = {n for c in conflicts(list(candidate.values())) for n in c.apps}
        candidate = {f: a for f, a in candidate.items() if a.name not in bad}
    # Accessories (issue 13): a clash refuses the accessory (or the app whose dependsOn is wrong), never guesses.
    for acc_file, name, message in accessory_problems(list(candidate.values()), accessories):
        if acc_file is not None:
            accessories.pop(acc_file, None)
            out.problems.append(Problem(acc_file, name, message))
        else:
            for f in [g for g, a in candidate.items() if a.name == name]:
                del candidate[f]
                out.problems.append(Problem(f, name, f"{f}: {message}"))
    out.apps_by_file = candidate
    out.accessories_by_file = accessories
    if cache is not None:
        cache.commit(candidate)
    return out
