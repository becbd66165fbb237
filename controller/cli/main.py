"""Command line: `reconcile --once | --plan | --status | --watch -f PATH`, and
`reconcile deploy -f SPEC --image IMG | rollback -f SPEC [--to REF] | promote -f SPEC | maintenance on|off -f SPEC`
(edit the spec; see controller/cli/release.py), `reconcile releases -f SPEC [--json]` (what served, and what a
rollback to each would be),
`reconcile export -f PATH --to argo-rollouts [-o DIR] [--namespace NS]` (manifests; see controller/export/).

Exit codes
  --once    0 converged; 1 could not converge; 2 invalid input (YAML, spec, arguments)
  --plan    0 in sync; 1 changes pending (or blocked); 2 invalid input or error
  --status  0 every app Ready; 1 some app not Ready; 2 invalid input or error
  --watch   0 after SIGTERM/SIGINT; 1 cannot serve --metrics-port; 2 invalid arguments or no valid spec at start
  deploy, rollback, promote, maintenance
            0 spec written (--apply: and converged); 1 --apply: written, could not converge; 2 refused or invalid
            input (one line; the spec file unchanged)
  export    0 written (a warning line per approximated field); 1 cannot write; 2 invalid input or a spec it cannot
            express (nothing written)
  any mode  141 (128 + SIGPIPE, as a shell reports a program killed by it) when standard output was closed
            before everything was written (`reconcile --schema | head -1`): no error message, the rest is dropped
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from controller import __version__
from controller.cli import modes
from controller.kernel.errors import EXIT_FAIL, EXIT_INVALID, EXIT_OK, ControllerError, InvalidInput
from controller.kernel.logs import configure
from controller.runtime import build as runtime
from controller.runtime.options import (
    PRUNE_INTERVAL,
    RELEASE_COMMANDS,
    Options,
    Parser,
    add_notify_argument,
    add_state_dir,
    err,
    nonneg,
    port,
    positive,
)
from controller.spec.cache import SpecCache
from controller.spec.directory import Selection, select
from controller.store.metrics import Metrics, NullMetrics, SourceMetrics

if TYPE_CHECKING:
    from controller.drivers.notify import Notifier


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="reconcile",
        description="Converge blue/green Docker apps behind Nginx to the desired state in spec files.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 2)[2] if __doc__ else None,
    )
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--once", action="store_true", help="converge, then exit")
    mode.add_argument("--plan", action="store_true", help="print differences and ordered actions; change nothing")
    mode.add_argument("--status", action="store_true", help="desired against observed, per app")
    mode.add_argument("--watch", action="store_true", help="run as a service: reconcile on changes and periodically")
    mode.add_argument("--schema", action="store_true", help="print the JSON Schema of the spec and exit")
    mode.add_argument("--version", action="version", version=f"bluegreen-controller {__version__}")
    p.add_argument("-f", "--file", dest="path", type=Path, help="a spec file or a directory of *.yaml specs")
    add_state_dir(p)
    p.add_argument("--json", action="store_true", help="machine-readable output for --plan and --status")
    p.add_argument("--lock-timeout", type=nonneg, default=30.0, help="seconds to wait for another run's lock (default %(default)s)")
    p.add_argument("--log-format", choices=("auto", "json", "console"), default="auto", help="auto: console on a terminal, else JSON lines")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    p.add_argument("--backoff-base", type=positive, default=60.0, help="first retry delay after a failed deploy, seconds (doubles, capped)")
    p.add_argument("--backoff-max", type=positive, default=3600.0, help="cap of the retry delay, seconds")
    p.add_argument("--metrics-textfile", type=Path, help="--once: write Prometheus metrics here (node_exporter textfile collector)")
    p.add_argument("--metrics-port", type=port, help="--watch: serve /metrics on this port")
    p.add_argument("--metrics-addr", default="127.0.0.1", help="--watch: address for --metrics-port (default %(default)s)")
    p.add_argument("--resync", type=positive, default=60.0, help="--watch: full resync period, seconds (jittered)")
    p.add_argument(
        "--prune-interval",
        type=nonneg,
        default=PRUNE_INTERVAL,
        help="--once: unused images (spec.keepImages) are swept after a pass that changed something, else at most "
        "every this many seconds (default %(default)s; 0: after every converged pass; --watch: every --resync)",
    )
    p.add_argument("--docker-url", default=None, help="Docker daemon URL (default: DOCKER_HOST or the local socket)")
    add_notify_argument(p)
    add_source_arguments(p)
    return p


def add_source_arguments(p: argparse.ArgumentParser) -> None:
    """--git-*: the specs come from a git repository the controller fetches itself (controller/runtime/source.py)."""
    g = p.add_argument_group("git source (instead of -f)")
    g.add_argument("--git-url", help="fetch the specs from this repository (https://, ssh://, git://, file://, user@host:path)")
    g.add_argument("--git-ref", default="main", help="branch or tag to follow (default %(default)s)")
    g.add_argument("--git-path", default=".", help="directory (or file) of specs inside the repository (default: its root)")
    g.add_argument("--git-interval", type=positive, default=60.0, help="--watch: fetch every this many seconds (jittered; default %(default)s)")
    g.add_argument("--git-verify", type=Path, metavar="ALLOWED_SIGNERS", help="apply only commits SSH-signed by a key in this file")
    g.add_argument("--git-token-file", type=Path, help="HTTPS: a root-only file holding TOKEN or USER:TOKEN")
    g.add_argument("--git-token-ssm", metavar="PARAMETER", help="HTTPS: the token from this SSM parameter (a SecureString, e.g. /ops/git-token)")
    g.add_argument("--git-token-ssm-region", metavar="REGION", help="AWS region of --git-token-ssm (default: the environment's)")
    g.add_argument("--git-ssh-key", type=Path, help="SSH: a root-only deploy key file")
    g.add_argument("--git-known-hosts", type=Path, help="SSH: known_hosts file with the server's key (checked strictly)")


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    if words and words[0] in RELEASE_COMMANDS:  # `reconcile deploy -f SPEC ...`: controller/cli/release.py
        from controller.cli.release import main as release_main

        started()  # a deploy may run long: the GC is back from here
        return release_main(words)
    if words and words[0] == "export":  # `reconcile export -f PATH --to argo-rollouts`: controller/export/
        from controller.export.command import main as export_main

        started()
        return export_main(words[1:], git=runtime.git_checkout)
    args = build_parser().parse_args(argv)
    if args.schema:
        from controller.spec.app import json_schema

        print(json.dumps(json_schema(), indent=2))
        return EXIT_OK
    if (args.path is None) == (args.git_url is None):
        err("invalid arguments: -f PATH or --git-url URL is required (not both)")
        return EXIT_INVALID
    opts = Options.from_args(args)  # the Namespace ends here: everything below reads typed options
    if opts.mode == "watch" and opts.run.metrics_textfile:
        err("invalid arguments: --metrics-textfile is for --once; with --watch use --metrics-port")
        return EXIT_INVALID
    if opts.mode == "watch":  # image sweeps on the resync period (docs/operations.md#image-pruning)
        opts = dataclasses.replace(opts, run=dataclasses.replace(opts.run, prune_interval=opts.resync))
    configure(opts.run.log_format, level=opts.run.log_level)
    return _run(opts)


def started() -> None:
    """Start-up is over: what it allocated (modules, the drivers) moves to the permanent generation, so the cyclic
    GC that `run` turned off for it (tens of ms of a cron run) comes back without walking all of it again. A
    caller of `main` that left the GC on (tests) is not affected."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def _run(opts: Options) -> int:
    """--notify-url's notifier (--once, --watch), open for the whole run and closed after it (lock released)."""
    notifier = runtime.open_notifier(opts.run) if opts.mode in ("once", "watch") else None
    try:
        return _compose(opts, notifier)
    finally:
        if notifier is not None:
            notifier.close(runtime.NOTIFY_CLOSE_WAIT)


def _compose(opts: Options, notifier: Notifier | None) -> int:
    """The composition root: the source, then the specs, then the Runtime, built once and handed to the mode."""
    source = None
    path = opts.path
    watch = opts.mode == "watch"
    if opts.git is not None:
        try:  # fetched now for --once and --watch; the path is its checkout
            source = runtime.open_git(opts.git, opts.run, fetch=opts.mode in ("once", "watch"), notifier=notifier)
        except ControllerError as e:
            err(str(e))
            return e.exit_code
        path = source.stable_path
        if source.checkout_path() is None and not watch:  # nothing ever fetched: a temporary failure
            err(f"{source.cfg.shown_url} {source.cfg.ref}: no commit fetched yet: {(source.problem or ('', 'unknown'))[1]}")
            return EXIT_FAIL
    assert path is not None
    try:
        # The spec cache (controller/spec/cache.py): read by --once, --plan and --status, written by --once only.
        cache = None if watch else SpecCache(opts.run.state_dir, store=opts.mode == "once")
        loaded = source.select(path, state_dir=opts.run.state_dir) if source is not None else select(path, state_dir=opts.run.state_dir, cache=cache)
    except InvalidInput as e:
        if source is None or not watch:
            err(str(e))
            return e.exit_code
        loaded = Selection()  # watch mode: the poll thread fetches again until a commit arrives
    if watch and not loaded.apps and not loaded.accessories and (source is None or source.checkout_path() is not None):
        for line in modes.problem_lines(loaded, path):
            err(line)
        err(f"{path}: no valid spec to watch")
        return EXIT_INVALID
    if not watch:
        for line in modes.problem_lines(loaded, path):
            err(line)
    exported = watch or (opts.mode == "once" and opts.run.metrics_textfile is not None)
    metrics = Metrics() if exported else NullMetrics()  # nothing exported: no prometheus_client
    if source is not None and exported:
        source.bind_metrics(SourceMetrics(metrics.registry))
    if opts.mode == "once":
        for name in loaded.rejected:
            metrics.invalid_spec(name)
    if not watch and not loaded.apps and not loaded.accessories:
        if not loaded.problems:
            err(f"{path}: no *.yaml spec found")
        if opts.mode == "once" and opts.run.metrics_textfile:
            modes.export_invalid(metrics, opts.run)
        return EXIT_INVALID
    # The accessory reconciler only when the specs need it (--watch: always; an edit may add one).
    needed = watch or runtime.needs_accessories(loaded.accessories, loaded.apps)
    rt = runtime.build(opts.run, metrics, accessories=loaded.accessories if needed else None, source=source, notifier=notifier)
    started()
    try:
        if watch:
            return _watch(rt, path, opts)  # logs each invalid spec file as an event of its own
        if opts.mode == "plan":
            code = modes.plan(rt.apps, loaded.apps, opts.json, rt.accessories, loaded.accessories)
        elif opts.mode == "status":
            code = modes.status(rt.apps, loaded.apps, opts.json, rt.accessories, loaded.accessories)
        else:
            code = modes.once(rt, loaded.apps, loaded.accessories)
            if source is not None and source.problem is not None:
                err(f"source {source.cfg.shown_url} {source.cfg.ref}: {source.problem[0]}: {source.problem[1]}")
                code = max(code, EXIT_FAIL)  # the committed state is not (all) in force
    finally:
        rt.close()
    return max(code, EXIT_INVALID if loaded.problems else EXIT_OK)


def _watch(rt: runtime.Runtime, path: Path, opts: Options) -> int:
    """--watch: the apps' and the accessories' reconcilers registered with one manager (controller/runtime/watch.py)."""
    from controller.runtime.accessory_kind import AccessoryKind
    from controller.runtime.watch import AppKind, run_watch  # imported lazily: watchfiles is only needed here

    assert rt.accessories is not None
    return run_watch(rt, [AppKind(rt.apps), AccessoryKind(rt.accessories)], path, opts)


EXIT_STDOUT_CLOSED = 141


def _stdout_closed() -> bool:
    """Whether the reader of standard output is gone (a pipe or socket with no one at the other end)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no stdout, or not a file descriptor
        return False


def run() -> None:
    gc.disable()  # until `started`: see there
    try:
        code = main()
        sys.stdout.flush()  # so that a closed stdout shows here, not as a traceback at interpreter exit
    except KeyboardInterrupt:
        code = 130
    except Exception as e:
        if isinstance(e, BrokenPipeError) and _stdout_closed():
            # The reader stopped reading (`| head`): not an error of ours. Point stdout at /dev/null so that
            # the interpreter's final flush of what is still buffered does not fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            code = EXIT_STDOUT_CLOSED
        elif os.environ.get("BLUEGREEN_DEBUG"):
            raise
        else:  # a bug: still one line for cron mail, the traceback on request
            err(f"internal error: {type(e).__name__}: {e} (set BLUEGREEN_DEBUG=1 for the traceback)")
            code = EXIT_FAIL
    sys.exit(code)
