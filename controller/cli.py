"""Command line: `reconcile --once | --plan | --status | --watch -f PATH`, and
`reconcile deploy -f SPEC --image IMG | rollback -f SPEC [--to REF] | promote -f SPEC` (edit the spec; see
controller/release.py), `reconcile releases -f SPEC [--json]` (what served, and what a rollback to each would be),
`reconcile export -f PATH --to argo-rollouts [-o DIR] [--namespace NS]` (manifests; see controller/export/).

Exit codes
  --once    0 converged; 1 could not converge; 2 invalid input (YAML, spec, arguments)
  --plan    0 in sync; 1 changes pending (or blocked); 2 invalid input or error
  --status  0 every app Ready; 1 some app not Ready; 2 invalid input or error
  --watch   0 after SIGTERM/SIGINT; 1 cannot serve --metrics-port; 2 invalid arguments or no valid spec at start
  deploy, rollback, promote
            0 spec written (--apply: and converged); 1 --apply: written, could not converge; 2 refused or invalid
            input (one line; the spec file unchanged)
  export    0 written (a warning line per approximated field); 1 cannot write; 2 invalid input or a spec it cannot
            express (nothing written)
  any mode  141 (128 + SIGPIPE, as a shell reports a program killed by it) when standard output was closed
            before everything was written (`reconcile --schema | head -1`): no error message, the rest is dropped
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn

from controller import __version__, accessory_cli
from controller.counters import carry_over
from controller.errors import EXIT_FAIL, EXIT_INVALID, EXIT_OK, ControllerError, InvalidInput, LockBusy
from controller.logs import configure, redact_text
from controller.metrics import Metrics, SourceMetrics
from controller.planner import Plan
from controller.pruning import ImageRemoval
from controller.reconcile import AppResult, Reconciler
from controller.secrets import SecretsResolver
from controller.spec import BlueGreenApp, json_schema
from controller.specdir import Selection, select
from controller.state import DEFAULT_STATE_DIR, Lock, StateStore


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, like every other error of ours; `--help` has the rest.
        self.exit(EXIT_INVALID, f"reconcile: invalid arguments: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
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
    p.add_argument(
        "--state-dir",
        type=_state_dir,
        default=os.environ.get("BLUEGREEN_STATE_DIR") or str(DEFAULT_STATE_DIR),  # a str: argparse checks it with `type`
        help="lock, status and history (env BLUEGREEN_STATE_DIR; default %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output for --plan and --status")
    p.add_argument("--lock-timeout", type=_nonneg, default=30.0, help="seconds to wait for another run's lock (default %(default)s)")
    p.add_argument("--log-format", choices=("auto", "json", "console"), default="auto", help="auto: console on a terminal, else JSON lines")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    p.add_argument("--backoff-base", type=_positive, default=60.0, help="first retry delay after a failed deploy, seconds (doubles, capped)")
    p.add_argument("--backoff-max", type=_positive, default=3600.0, help="cap of the retry delay, seconds")
    p.add_argument("--metrics-textfile", type=Path, help="--once: write Prometheus metrics here (node_exporter textfile collector)")
    p.add_argument("--metrics-port", type=_port, help="--watch: serve /metrics on this port")
    p.add_argument("--metrics-addr", default="127.0.0.1", help="--watch: address for --metrics-port (default %(default)s)")
    p.add_argument("--resync", type=_positive, default=60.0, help="--watch: full resync period, seconds (jittered)")
    p.add_argument("--docker-url", default=None, help="Docker daemon URL (default: DOCKER_HOST or the local socket)")
    add_notify_argument(p)
    add_source_arguments(p)
    return p


def add_notify_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--notify-url",
        dest="notify_urls",
        action="append",
        type=_notify_url,
        default=[],
        metavar="URL",
        help="--once, --watch: POST each release event (cutover, switch-back, failover, rollback, deploy failed, source "
        "commit refused) as JSON here; repeatable; https://, or http:// to a loopback address",
    )


def _notify_url(v: str) -> str:
    from controller.releases import check_notify_url

    try:
        return check_notify_url(v)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--notify-url: {e}") from None


def open_notifier(args: argparse.Namespace) -> Any:
    """--notify-url: the Notifier (drivers/notify.py; httpx loads here), kept on `args` for every Reconciler and the
    git source; None without one. `close_notifier` delivers what is queued at the end of the run."""
    if not getattr(args, "notify_urls", None):
        args.notify = None
        return None
    from controller.drivers.notify import Notifier

    args.notify = Notifier(args.notify_urls, on_failure=lambda reason: None)  # counted once a Reconciler is built
    return args.notify


def close_notifier(args: argparse.Namespace, wait: float = 10.0) -> None:
    notifier = getattr(args, "notify", None)
    if notifier is not None:
        notifier.close(wait)


def add_source_arguments(p: argparse.ArgumentParser) -> None:
    """--git-*: the specs come from a git repository the controller fetches itself (controller/source.py)."""
    g = p.add_argument_group("git source (instead of -f)")
    g.add_argument("--git-url", help="fetch the specs from this repository (https://, ssh://, git://, file://, user@host:path)")
    g.add_argument("--git-ref", default="main", help="branch or tag to follow (default %(default)s)")
    g.add_argument("--git-path", default=".", help="directory (or file) of specs inside the repository (default: its root)")
    g.add_argument("--git-interval", type=_positive, default=60.0, help="--watch: fetch every this many seconds (jittered; default %(default)s)")
    g.add_argument("--git-verify", type=Path, metavar="ALLOWED_SIGNERS", help="apply only commits SSH-signed by a key in this file")
    g.add_argument("--git-token-file", type=Path, help="HTTPS: a root-only file holding TOKEN or USER:TOKEN")
    g.add_argument("--git-token-ssm", metavar="PARAMETER", help="HTTPS: the token from this SSM parameter (a SecureString, e.g. /ops/git-token)")
    g.add_argument("--git-token-ssm-region", metavar="REGION", help="AWS region of --git-token-ssm (default: the environment's)")
    g.add_argument("--git-ssh-key", type=Path, help="SSH: a root-only deploy key file")
    g.add_argument("--git-known-hosts", type=Path, help="SSH: known_hosts file with the server's key (checked strictly)")


def _ssm_token(name: str, region: str | None) -> str:
    """--git-token-ssm: the parameter's current value, through the secrets code (boto3 loads here only)."""
    import pydantic

    from controller.drivers.ssm import SsmSource
    from controller.spec import SsmSecrets

    parent, _, leaf = name.rpartition("/")
    try:
        cfg = SsmSecrets(path=parent + "/", names=[leaf], region=region, rename={leaf: "GIT_TOKEN"})
    except pydantic.ValidationError:
        raise InvalidInput(f"--git-token-ssm: {name!r} is not an SSM parameter name (/path/name; and --git-token-ssm-region)") from None
    if not name.startswith("/") or not leaf:
        raise InvalidInput(f"--git-token-ssm: {name!r} is not an SSM parameter name (/path/name)")
    ssm = SsmSource()
    return ssm.values(cfg, ssm.versions(cfg))["GIT_TOKEN"]  # registered with the log redactor on arrival


def _git_checkout(url: str, ref: str, path: str, state_dir: Path) -> tuple[Path, str]:
    """`reconcile export --git-url`: the spec path in the checkout in force and its commit (read, never fetched)."""
    from controller.source import GitSource, config_from_args

    none = dict.fromkeys(("git_verify", "git_token_file", "git_ssh_key", "git_known_hosts"))
    cfg = config_from_args(argparse.Namespace(git_url=url, git_ref=ref, git_path=path, git_interval=60.0, **none))
    src = GitSource(cfg, Path(_state_dir(str(state_dir))))
    concrete = src.checkout_path()
    if concrete is None:
        raise InvalidInput(f"{cfg.shown_url} {ref}: no commit in force in {state_dir} (run reconcile --once --git-url ... first)")
    return concrete, concrete.relative_to(src.root / "checkouts").parts[0]


def _state_dir(v: str) -> Path:
    """Absolute, normalised, safe characters: the rules of the paths a spec names (spec.check_path)."""
    from controller.spec import check_path

    try:
        return Path(check_path(v, "--state-dir"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive(v: str) -> float:
    try:
        f = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r} is not a number") from None
    if f <= 0:
        raise argparse.ArgumentTypeError(f"{v!r} must be > 0")
    return f


def _nonneg(v: str) -> float:
    f = _positive(v) if v.strip() not in ("0", "0.0") else 0.0
    return f


def _port(v: str) -> int:
    if not v.isdigit() or not 1 <= int(v) <= 65535:
        raise argparse.ArgumentTypeError(f"{v!r} is not a port (1-65535)")
    return int(v)


def load_specs(path: Path, state_dir: Path | None = None) -> Selection:
    """Every valid app, and one problem per invalid file: one broken spec must not stop the others."""
    return select(path, state_dir=state_dir)


def problem_lines(sel: Selection, path: Path) -> list[str]:
    """One line per invalid file, and one per conflict (not one per side of it)."""
    lines: list[str] = []
    for p in sel.problems:
        line = f"{path}: {p.conflict}" if p.conflict is not None else p.message
        if line not in lines:
            lines.append(line)
    return lines


def build_reconciler(
    args: argparse.Namespace, world: Any, metrics: Metrics, should_stop: Callable[[], bool] = lambda: False
) -> Reconciler:
    """The one place a Reconciler is built from the command line (--once, --plan, --status and --watch)."""
    from controller.drivers.ssm import SsmSource  # boto3 itself only once an app has secrets

    notify = getattr(args, "notify", None)
    if notify is not None:
        notify.on_failure = metrics.notification_failed
    return Reconciler(
        world,
        StateStore(args.state_dir),
        metrics,
        backoff_base=args.backoff_base,
        backoff_max=args.backoff_max,
        should_stop=should_stop,
        resolver=SecretsResolver(world.write_file, SsmSource()),
        source=getattr(args, "git_source", None),
        notify=notify,
    )


def err(message: str) -> None:
    print(f"reconcile: {redact_text(message)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    if words and words[0] in ("deploy", "rollback", "promote", "releases"):  # `reconcile deploy -f SPEC ...`: controller/release.py
        from controller.release import main as release_main

        return release_main(words)
    if words and words[0] == "export":  # `reconcile export -f PATH --to argo-rollouts`: controller/export/
        from controller.export.command import main as export_main

        return export_main(words[1:], git=_git_checkout)
    args = build_parser().parse_args(argv)
    if args.schema:
        print(json.dumps(json_schema(), indent=2))
        return EXIT_OK
    if (args.path is None) == (args.git_url is None):
        err("invalid arguments: -f PATH or --git-url URL is required (not both)")
        return EXIT_INVALID
    configure(args.log_format, level=args.log_level)
    if args.once or args.watch:
        open_notifier(args)
    try:
        return _main(args)
    finally:
        close_notifier(args)  # after the lock is released: a receiver never holds up another run


def _main(args: argparse.Namespace) -> int:
    source = None
    if args.git_url is not None:
        from controller.source import open_source

        try:
            if args.git_token_ssm is not None:
                args.git_token_value = _ssm_token(args.git_token_ssm, args.git_token_ssm_region)
            source = args.git_source = open_source(args)  # fetches for --once and --watch; the path is its checkout
        except ControllerError as e:
            err(str(e))
            return e.exit_code
        args.path = source.stable_path
        if source.checkout_path() is None and not args.watch:  # nothing ever fetched: a temporary failure
            err(f"{source.cfg.shown_url} {source.cfg.ref}: no commit fetched yet: {(source.problem or ('', 'unknown'))[1]}")
            return EXIT_FAIL
    try:
        loaded = source.select(args.path, state_dir=args.state_dir) if source is not None else load_specs(args.path, args.state_dir)
    except InvalidInput as e:
        if source is None or not args.watch:
            err(str(e))
            return e.exit_code
        loaded = Selection()  # watch mode: the poll thread fetches again until a commit arrives
    if args.watch:
        from controller.watch import run_watch  # imported lazily: watchfiles is only needed here

        if not loaded.apps and not loaded.accessories and (source is None or source.checkout_path() is not None):
            for line in problem_lines(loaded, args.path):
                err(line)
            err(f"{args.path}: no valid spec to watch")
            return EXIT_INVALID
        code: int = run_watch(
            args, make_reconciler=lambda world, metrics, stop: build_reconciler(args, world, metrics, stop), err=err
        )  # logs each invalid spec file as an event of its own
        return code
    for line in problem_lines(loaded, args.path):
        err(line)
    metrics = Metrics()
    if source is not None:
        source.bind_metrics(SourceMetrics(metrics.registry))
    if args.once:
        for name in loaded.rejected:
            metrics.invalid_spec(name)
    if not loaded.apps and not loaded.accessories:
        if not loaded.problems:
            err(f"{args.path}: no *.yaml spec found")
        if args.once and args.metrics_textfile:
            _export_invalid(metrics, args)
        return EXIT_INVALID
    from controller.drivers.host import HostWorld  # Docker SDK and httpx load here, not at import

    world = HostWorld(args.docker_url)
    rec = build_reconciler(args, world, metrics)
    runner = None
    if accessory_cli.needed(loaded.accessories, loaded.apps):  # issue 13: kind: Accessory, dependsOn
        runner = accessory_cli.build_runner(args, world, metrics, rec, loaded.accessories)
    try:
        if args.plan:
            code = _plan(rec, loaded.apps, args.json, runner, loaded.accessories)
        elif args.status:
            code = _status(rec, loaded.apps, args.json, runner, loaded.accessories)
        else:
            code = _once(rec, loaded.apps, args, runner, loaded.accessories)
            if source is not None and source.problem is not None:
                err(f"source {source.cfg.shown_url} {source.cfg.ref}: {source.problem[0]}: {source.problem[1]}")
                code = max(code, EXIT_FAIL)  # the committed state is not (all) in force
    finally:
        world.close()
    return max(code, EXIT_INVALID if loaded.problems else EXIT_OK)


def _containers(rec: Reconciler) -> Any:
    from controller.observe import index_containers

    return index_containers(rec.world)


def _once(
    rec: Reconciler, apps: list[BlueGreenApp], args: argparse.Namespace, runner: Any = None, accessories: Any = ()
) -> int:
    acc_code = EXIT_OK
    try:
        with Lock(args.state_dir, args.lock_timeout):
            if runner is not None:  # accessories first: the apps' networks and dependsOn need them
                acc_code, apps = accessory_cli.reconcile_first(runner, list(accessories), apps)
            code = max(_converge(rec, apps), acc_code)
            # Under the lock: the counters continue from the state dir (controller/counters.py).
            return _export(rec.metrics, args, code, carry=True)
    except ControllerError as e:  # the lock itself: busy, or its directory cannot be trusted
        err(str(e))
        if isinstance(e, LockBusy):
            return e.exit_code  # the run holding the lock writes the textfile; this one did nothing
        for a in apps:  # still a (failed) run for monitoring
            rec.metrics.unreachable(a.name)
        return _export(rec.metrics, args, e.exit_code, carry=False)


def _converge(rec: Reconciler, apps: list[BlueGreenApp]) -> int:
    try:
        containers = _containers(rec)  # one Docker call for every app
        results = _parallel(apps, lambda a: rec.reconcile(a, containers)) if apps else []
    except ControllerError as e:
        err(str(e))
        for a in apps:  # Docker unreachable: still a (failed) run for monitoring
            rec.metrics.unreachable(a.name)
        return e.exit_code
    code = EXIT_OK
    for r in results:
        _summary(r)
        if not r.converged:
            code = EXIT_FAIL
    return code


def _export(metrics: Metrics, args: argparse.Namespace, code: int, *, carry: bool) -> int:
    """--metrics-textfile: continue the counters from the state dir (`carry`, lock held), then write the file."""
    if not args.metrics_textfile:
        return code
    if carry:
        carry_over(metrics, args.state_dir)
    return code if _write_textfile(metrics, args.metrics_textfile) else max(code, EXIT_FAIL)


def _export_invalid(metrics: Metrics, args: argparse.Namespace) -> None:
    """No valid spec: the run's `invalid` counts still continue the stored counters, under the lock if it is free
    at once (the invalid input is what this run reports: no wait, no second line)."""
    try:
        with Lock(args.state_dir, 0):
            _export(metrics, args, EXIT_INVALID, carry=True)
    except LockBusy:
        pass  # another run holds it: that run writes the textfile
    except ControllerError:  # the state dir cannot be used: the counts of this run alone
        _export(metrics, args, EXIT_INVALID, carry=False)


def _write_textfile(metrics: Metrics, path: Path) -> bool:
    try:
        metrics.write_textfile(path)
    except ControllerError as e:  # HostError: cannot write, or a directory that is not trusted
        err(f"metrics textfile: {e}")
        return False
    return True


def _parallel(apps: list[BlueGreenApp], fn: Any) -> list[AppResult]:
    # A slow health wait for one app must not hold up the others.
    if len(apps) == 1:
        return [fn(apps[0])]
    with ThreadPoolExecutor(max_workers=min(8, len(apps)), thread_name_prefix="app") as pool:
        return list(pool.map(fn, apps))


def _summary(r: AppResult) -> None:
    line = f"{r.app}: {r.result}"
    if r.actions_done:
        line += f" ({len(r.actions_done)} actions)"
    print(line)
    if r.error:
        err(f"{r.app}: {r.error}")
    elif r.plan is not None and r.plan.blockers and not r.converged:
        for b in r.plan.blockers:
            err(f"{r.app}: {b.reason}: {b.message}")
    stale = r.status.condition("SecretsStale") if r.status is not None else None
    if stale is not None and stale.status:
        err(f"{r.app}: SecretsStale: {stale.message}")


def _plan(rec: Reconciler, apps: list[BlueGreenApp], as_json: bool, runner: Any = None, accessories: Any = ()) -> int:
    acc_code, acc_rows = accessory_cli.plan_lines(runner, list(accessories), as_json, apps) if runner is not None else (EXIT_OK, [])
    if acc_code == EXIT_INVALID:
        return acc_code
    try:
        containers = _containers(rec)
        found = [(a, rec.plan_only(a, containers)) for a in apps]
    except ControllerError as e:
        err(str(e))
        return EXIT_INVALID
    plans = [(a, r[0]) for a, r in found]
    stale = {p.app: p.secrets_stale for _, p in plans if p.secrets_stale}  # secrets rotated since the live color started
    try:  # images the next converged pass would remove (controller/pruning.py)
        prunes = {a.name: rec.prune_plan(a, r[1]) for a, r in found if r[0].converged}
    except ControllerError as e:
        err(str(e))
        return EXIT_INVALID
    if as_json:
        print(json.dumps([*acc_rows, *({**_plan_json(p), "secretsStale": stale.get(p.app), "prune": _prune_json(prunes.get(p.app, ()))} for _, p in plans)], indent=2))
    else:
        for row in acc_rows:
            print(row)
        for _, p in plans:
            print(render_plan(p, stale.get(p.app)) + _render_prune(prunes.get(p.app, ())))
    return max(acc_code, EXIT_OK if all(p.converged for _, p in plans) and not stale and not any(prunes.values()) else EXIT_FAIL)


def _prune_json(removals: tuple[ImageRemoval, ...]) -> list[dict[str, Any]]:
    return [{"imageId": r.image_id, "references": list(r.references), "reason": r.reason} for r in removals]


def _render_prune(removals: tuple[ImageRemoval, ...]) -> str:
    return "".join(f"\n  - would remove image {', '.join(r.references)} ({r.image_id[:19]}): {r.reason}" for r in removals)


def _plan_json(p: Plan) -> dict[str, Any]:
    return {
        "app": p.app,
        "generation": p.generation,
        "inSync": p.converged,
        "serving": p.serving,
        "target": p.target,
        "diffs": list(p.diffs),
        "actions": [{"action": a.verb, "color": a.color, "reason": a.reason} for a in p.actions],
        "blockers": [{"reason": b.reason, "message": b.message} for b in p.blockers],
    }


def render_plan(p: Plan, secrets_stale: str | None = None) -> str:
    if p.converged and not secrets_stale:
        return f"{p.app}: in sync ({p.serving} serves)"
    lines = [f"{p.app}: {len(p.diffs) + (1 if secrets_stale else 0)} differences, {len(p.actions)} actions"]
    lines += [f"  ~ {d}" for d in p.diffs]
    lines += [f"  ~ secrets stale: {secrets_stale}"] if secrets_stale else []
    lines += [f"  {i}. {a.describe()}" for i, a in enumerate(p.actions, 1)]
    lines += [f"  ! blocked: {b.reason}: {b.message}" for b in p.blockers]
    return "\n".join(lines)


def _status(rec: Reconciler, apps: list[BlueGreenApp], as_json: bool, runner: Any = None, accessories: Any = ()) -> int:
    from controller.status import STATUS, render_text

    try:
        acc_code, acc_rows = accessory_cli.status_rows(runner, list(accessories)) if runner is not None else (EXIT_OK, [])
        containers = _containers(rec)
        statuses = [rec.status_only(a, containers) for a in apps]
    except ControllerError as e:
        err(str(e))
        return EXIT_INVALID
    if as_json:
        print(json.dumps([*acc_rows, *(STATUS.dump(s) for s in statuses)], indent=2))
    else:
        print("\n\n".join([*(accessory_cli.render_status(r) for r in acc_rows), *(render_text(s) for s in statuses)]))
    return max(acc_code, EXIT_OK if all(s.is_true("Ready") for s in statuses) else EXIT_FAIL)


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
