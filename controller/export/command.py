"""`reconcile export -f PATH --to argo-rollouts [-o DIR] [--namespace NS]` (or `--git-url ...`: the commit in force).

Exit codes: 0 exported (one warning line on stderr per approximated field of each spec); 1 the output could not be
written; 2 invalid arguments, an invalid spec, or a spec that cannot be expressed (one line each; nothing is
written: a partial export applied from a GitOps repository would delete the app that is missing from it).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from controller.export.argo import DEFAULT_PROMETHEUS, DNS_LABEL_RE, Options, export_accessory, export_app
from controller.export.render import FILE_NAMES, HEADER, Source, by_kind, stream
from controller.kernel.errors import EXIT_FAIL, EXIT_INVALID, EXIT_OK, InvalidInput, one_line
from controller.spec.accessory import Accessory
from controller.spec.app import BlueGreenApp
from controller.spec.directory import select

# --git-url: (url, ref, path, state dir) -> the spec path inside the checkout in force, and its commit. The CLI
# passes it in (controller.runtime.source reads the state dir), so that this package imports no driver.
GitCheckout = Callable[[str, str, str, Path], tuple[Path, str]]

PROG = "reconcile export"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_INVALID, f"reconcile: export: invalid arguments: {message} (see reconcile export --help)\n")


def _namespace(v: str) -> str:
    if not DNS_LABEL_RE.match(v):
        raise argparse.ArgumentTypeError(f"{v!r} is not a namespace name ([a-z0-9-], at most 63 characters)")
    return v


def _url(v: str) -> str:
    if not re.fullmatch(r"https?://[^/@?#\s]+(/[^?#@\s]*)?", v):
        raise argparse.ArgumentTypeError(f"{v!r} is not an http(s) URL without credentials or query")
    return v.rstrip("/")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Write the specs as Kubernetes + Argo Rollouts manifests (docs/export.md says where each field goes).",
        epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    p.add_argument("-f", "--file", dest="path", type=Path, help="a spec file or a directory of *.yaml specs")
    p.add_argument("--to", required=True, choices=("argo-rollouts",), help="the target (argo-rollouts)")
    p.add_argument("-o", "--output", type=Path, help="write one file per kind into this directory (default: one stream on stdout)")
    p.add_argument("--namespace", type=_namespace, help="metadata.namespace of every document (default: none, kubectl's)")
    p.add_argument(
        "--prometheus-url",
        type=_url,
        default=DEFAULT_PROMETHEUS,
        help="Prometheus with ingress-nginx's metrics, for spec.verify (default %(default)s; verify.prometheus.url wins)",
    )
    g = p.add_argument_group("git source (instead of -f): the commit in force in --state-dir, as --plan reads it")
    g.add_argument("--git-url", help="the repository reconcile --watch/--once --git-url follows")
    g.add_argument("--git-ref", default="main", help="branch or tag (default %(default)s)")
    g.add_argument("--git-path", default=".", help="directory (or file) of specs inside the repository (default: its root)")
    g.add_argument(
        "--state-dir",
        type=Path,
        default=Path(os.environ.get("BLUEGREEN_STATE_DIR") or "/var/lib/bluegreen"),
        help="the state dir holding the checkout (env BLUEGREEN_STATE_DIR; default %(default)s)",
    )
    return p


def _say(message: str) -> None:
    print(f"reconcile: export: {message}", file=sys.stderr)


def export_selection(path: Path, opts: Options, shown: Callable[[Path], str], commit: str | None) -> tuple[list[Source], list[str]]:
    """Every spec under `path` exported, or the one-line problems (invalid specs, inexpressible ones, name clashes)."""
    sel = select(path, host=False)
    problems = [p.message if p.conflict is None else f"{path}: {p.conflict}" for p in sel.problems]
    accessories = {a.name: a for a in sel.accessories}
    specs: list[tuple[Path, BlueGreenApp | Accessory]] = [*sel.apps_by_file.items(), *sel.accessories_by_file.items()]
    sources: list[Source] = []
    for f, spec in sorted(specs, key=lambda kv: str(kv[0])):
        try:
            e = export_app(spec, accessories, opts) if isinstance(spec, BlueGreenApp) else export_accessory(spec, opts)
        except InvalidInput as err:
            problems.append(f"{shown(f)}: {err}")
            continue
        sources.append(Source(shown(f), e, commit))
    owner: dict[tuple[str, str], str] = {}
    for src in sources:
        for doc in src.exported.documents:
            key = (doc["kind"], doc["metadata"]["name"])
            if key in owner and owner[key] != src.exported.name:
                problems.append(f"{src.file}: {key[0]} {key[1]} is also exported for {owner[key]}: rename one of them")
            owner.setdefault(key, src.exported.name)
    if not problems and not sources:
        problems.append(f"{path}: no *.yaml spec found")
    return sources, problems


def _write_dir(out: Path, files: dict[str, str]) -> None:
    """One file per kind; a file of a kind no longer exported is removed when it is one of ours (our header)."""
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)
    for name in set(FILE_NAMES.values()) - set(files):
        old = out / name
        if old.is_file() and old.read_text(errors="replace").startswith(HEADER):
            old.unlink()


def main(argv: list[str], git: GitCheckout | None = None) -> int:
    args = build_parser().parse_args(argv)
    if (args.path is None) == (args.git_url is None):
        _say("invalid arguments: -f PATH or --git-url URL is required (not both)")
        return EXIT_INVALID
    opts = Options(namespace=args.namespace, prometheus_url=args.prometheus_url)
    commit: str | None = None
    try:
        if args.git_url is not None:
            if git is None:
                raise InvalidInput("--git-url is not available here")
            path, commit = git(args.git_url, args.git_ref, args.git_path, args.state_dir)
            base, prefix = path, Path(args.git_path)
            origin = f"{args.git_url} {args.git_ref} {args.git_path} at commit {commit}"

            def shown(f: Path) -> str:
                return str(prefix / f.relative_to(base)) if f != base and f.is_relative_to(base) else str(prefix)
        else:
            path = args.path
            origin = str(path)

            def shown(f: Path) -> str:
                return str(f)

        sources, problems = export_selection(path, opts, shown, commit)
    except InvalidInput as e:
        _say(one_line(e, 1000))
        return EXIT_INVALID
    if problems:
        for line in problems:
            _say(line)
        _say("nothing written")
        return EXIT_INVALID
    for src in sources:
        for note in src.exported.notes:
            _say(f"warning: {src.exported.name}: {note.field}: {note.message}")
    try:
        if args.output is not None:
            _write_dir(args.output, by_kind(sources, origin))
        else:
            sys.stdout.write(stream(sources, origin))
    except OSError as e:
        _say(f"{args.output or 'stdout'}: cannot write: {one_line(e)}")
        return EXIT_FAIL
    return EXIT_OK
