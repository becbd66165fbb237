"""The command line's words, parsed into typed options: what `reconcile` and `reconcile deploy|rollback|promote|maintenance`
share (the argument types, one-line errors, the run settings), and nothing else.

argparse's Namespace stops at the parsers (controller/cli/main.py, controller/cli/release.py): each turns it into one of
the frozen dataclasses below, and the composition root (controller/runtime/build.py) builds from those.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal, NoReturn, get_args

from controller.kernel.errors import EXIT_INVALID
from controller.kernel.logs import redact_text
from controller.store.releases import check_notify_url
from controller.store.state import DEFAULT_STATE_DIR

PRUNE_INTERVAL = 3600.0  # cron: seconds between image sweeps of runs that change nothing


def err(message: str) -> None:
    """One line on stderr, secrets masked: how every mode reports a problem."""
    print(f"reconcile: {redact_text(message)}", file=sys.stderr)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, like every other error of ours; `--help` has the rest.
        self.exit(EXIT_INVALID, f"reconcile: invalid arguments: {message} (see --help)\n")


def state_dir_arg(v: str) -> Path:
    """Absolute, normalised, safe characters: the rules of the paths a spec names (spec.check_path)."""
    from controller.spec.base import check_path

    try:
        return Path(check_path(v, "--state-dir"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def positive(v: str) -> float:
    try:
        f = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r} is not a number") from None
    if f <= 0:
        raise argparse.ArgumentTypeError(f"{v!r} must be > 0")
    return f


def nonneg(v: str) -> float:
    return positive(v) if v.strip() not in ("0", "0.0") else 0.0


def port(v: str) -> int:
    if not v.isdigit() or not 1 <= int(v) <= 65535:
        raise argparse.ArgumentTypeError(f"{v!r} is not a port (1-65535)")
    return int(v)


def add_state_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--state-dir",
        type=state_dir_arg,
        default=os.environ.get("BLUEGREEN_STATE_DIR") or str(DEFAULT_STATE_DIR),  # a str: argparse checks it with `type`
        help="lock, status and history (env BLUEGREEN_STATE_DIR; default %(default)s)",
    )


def add_notify_argument(p: argparse.ArgumentParser) -> None:
    """--notify-url (repeatable): where release events are posted (controller/releases.py, drivers/notify.py)."""
    p.add_argument(
        "--notify-url",
        dest="notify_urls",
        action="append",
        type=notify_url,
        default=[],
        metavar="URL",
        help="POST each release event (cutover, switch-back, failover, rollback, deploy failed, source commit refused) "
        "as JSON here, while converging; repeatable; https://, or http:// to a loopback address",
    )


def notify_url(v: str) -> str:
    try:
        return check_notify_url(v)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--notify-url: {e}") from None


@dataclass(frozen=True)
class Settings:
    """What a converging run is built with, whichever command asked for it (--once, --watch, deploy --apply)."""

    state_dir: Path
    lock_timeout: float = 30.0
    backoff_base: float = 60.0
    backoff_max: float = 3600.0
    metrics_textfile: Path | None = None
    docker_url: str | None = None
    log_format: str = "auto"
    log_level: str = "info"
    # Seconds between image sweeps of passes that change nothing (docs/operations.md#image-pruning): cron's
    # --prune-interval; --watch sweeps on its resync period; 0: after every converged pass.
    prune_interval: float = PRUNE_INTERVAL
    notify_urls: tuple[str, ...] = ()  # --notify-url

    @classmethod
    def from_args(cls, a: argparse.Namespace) -> Settings:
        # The same names as the arguments' (a parser without one of them: the default).
        values = {f.name: getattr(a, f.name) for f in fields(cls) if hasattr(a, f.name)}
        return cls(**{**values, "notify_urls": tuple(values.get("notify_urls", ()))})


@dataclass(frozen=True)
class SourceOptions:
    """--git-*: the specs come from a git repository the controller fetches itself (controller/runtime/source.py)."""

    url: str
    ref: str = "main"
    path: str = "."
    interval: float = 60.0
    verify: Path | None = None
    token_file: Path | None = None
    token_ssm: str | None = None
    token_ssm_region: str | None = None
    ssh_key: Path | None = None
    known_hosts: Path | None = None

    @classmethod
    def from_args(cls, a: argparse.Namespace) -> SourceOptions | None:
        if a.git_url is None:
            return None
        return cls(**{f.name: getattr(a, f"git_{f.name}") for f in fields(cls)})  # --git-url, --git-ref, ...


Mode = Literal["once", "plan", "status", "watch"]


@dataclass(frozen=True)
class Options:
    """`reconcile --once | --plan | --status | --watch`: the mode, where the specs are, and how to run."""

    mode: Mode
    run: Settings
    path: Path | None = None  # -f; None with --git-url (the source's checkout is the path)
    git: SourceOptions | None = None
    json: bool = False
    metrics_port: int | None = None
    metrics_addr: str = "127.0.0.1"
    resync: float = 60.0

    @classmethod
    def from_args(cls, a: argparse.Namespace) -> Options:
        mode: Mode = "once" if a.once else "plan" if a.plan else "status" if a.status else "watch"
        return cls(
            mode=mode,
            run=Settings.from_args(a),
            path=a.path,
            git=SourceOptions.from_args(a),
            json=a.json,
            metrics_port=a.metrics_port,
            metrics_addr=a.metrics_addr,
            resync=a.resync,
        )


ReleaseCommand = Literal["deploy", "rollback", "promote", "maintenance", "releases"]
RELEASE_COMMANDS: tuple[ReleaseCommand, ...] = get_args(ReleaseCommand)  # `reconcile <word> -f SPEC`: cli/release.py


@dataclass(frozen=True)
class ReleaseOptions:
    """`reconcile deploy | rollback | promote | maintenance on|off | releases -f SPEC` (controller/cli/release.py)."""

    command: ReleaseCommand
    path: Path
    run: Settings
    image: str | None = None
    force: bool = False
    apply: bool = False
    dry_run: bool = False
    maintenance: bool | None = None  # maintenance on (True) | off (False)
    message: str | None = None  # maintenance --message
    to: str | None = None  # rollback --to REF
    json: bool = False  # releases --json

    @classmethod
    def from_args(cls, a: argparse.Namespace) -> ReleaseOptions:
        return cls(
            command=a.command,
            path=a.path,
            run=Settings.from_args(a),
            image=getattr(a, "image", None),
            force=bool(getattr(a, "force", False)),
            apply=bool(getattr(a, "apply", False)),
            dry_run=bool(getattr(a, "dry_run", False)),
            maintenance={"on": True, "off": False}.get(getattr(a, "state", None) or ""),
            message=getattr(a, "message", None),
            to=getattr(a, "to", None),
            json=bool(getattr(a, "json", False)),
        )
