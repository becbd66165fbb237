"""`reconcile deploy | rollback | promote | maintenance on|off -f SPEC`: the two-field edit of a release (or the
maintenance block), made by a command.

A deploy is `image` and `activeColor` changed together, consistently; doing it by hand is where mistakes
happen. Each command reads the spec file (the trust checks of every spec read), looks at the host (the same
observation as `--plan`: what Nginx really serves, which containers run), refuses when the edit would be a
mistake, prints a unified diff, and writes the file atomically, keeping its comments, layout, mode and owner
(controller/spec/edit.py edits the text; drivers/files.write_spec writes it). Then, by default, nothing else:
the operator commits the file and cron or the watch service converges. `--apply` converges at once, by the
same path as `reconcile --once -f SPEC`.

- deploy --image IMG: image <- IMG, activeColor <- the other color. Refused unless Nginx serves the spec's
  activeColor from our container running the spec's image (otherwise a deploy is still in progress or has
  failed: deploying on top of it would flip to the color that never took traffic); `--force` skips that, and
  without `--apply` looks at nothing on the host (no Docker needed: a CI job editing a checkout).
- rollback: activeColor <- the other color, image <- what that color's container runs. Refused unless that
  container exists, is ours, runs, passes its health check and is steady (Docker shows it running `stableSeconds`
  without a restart: a warm standby, the rollback is a switch). The host is gathered for the spec as it will be, so
  the standby is inspected as the color that is to take traffic (restart count, start time).
- rollback --to REF (a release number from `reconcile releases`, a revision or an image): image <- that
  release's image, activeColor <- the other color. Checked like a deploy, and refused unless the table says the
  release can be rolled back to now (controller/store/releases.py `assess`: a switch, or a deploy of an image present
  or pullable with the spec's configuration unchanged since).
- releases (no edit): the table of the app's releases (state dir), newest first, with what rolling back to each
  would be now; `--json`.
- maintenance on|off [--message TEXT]: the `spec.maintenance` block <- {enabled: true|false, message} (the message
  kept unless --message gives another; the block's own comments are not kept). Nothing on the host is looked at:
  maintenance is desired state like the rest, and the next pass turns it on or off (at once with --apply).
- promote: image <- spec.preview.image, activeColor <- the other color (the one that runs the preview), and
  the `preview` block removed. Checked like a deploy. `spec.preview.env` is dropped with the block: the
  release runs with `spec.env` (a note says so; the idle color is then recreated before the switch).

Exit codes: 0 written (with --apply: and converged); 1 --apply: written, but could not converge; 2 refused,
invalid input or the host could not be observed: one line on stderr, the file unchanged.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from controller.cli import modes
from controller.kernel.errors import EXIT_INVALID, EXIT_OK, ControllerError, SpecError
from controller.kernel.logs import configure
from controller.runtime import build as runtime
from controller.runtime.options import (
    Parser,
    ReleaseOptions,
    Settings,
    add_notify_argument,
    add_state_dir,
    err,
    nonneg,
    positive,
)
from controller.spec.app import BlueGreenApp, Color, other
from controller.spec.directory import Selection, host_problem, select, state_dir_problem
from controller.spec.edit import Current, Edited, edit, read_current, unified_diff
from controller.store.releases import Host, Release, Releases, Row, assess, render_table, table_json
from controller.world.facts import Observed

if TYPE_CHECKING:
    from controller.drivers.notify import Notifier
    from controller.spec.accessory import Accessory


class Refused(SpecError):
    """The edit would be a mistake on this host now (exit 2, nothing written)."""


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="reconcile", description="Edit a spec file for a release (deploy, rollback, promote, maintenance); see the module doc.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    helps = {
        "deploy": "image <- --image, flip activeColor (refused while the spec and Nginx disagree, unless --force)",
        "rollback": "flip activeColor back to the warm standby, image <- what it runs (refused when there is none)",
        "promote": "image <- spec.preview.image, flip activeColor, remove spec.preview",
        "releases": "the app's releases, newest first: how each ended, and what rolling back to it would be now",
        "maintenance": "spec.maintenance.enabled <- on|off (the site answers every request with 503 and the maintenance page)",
    }
    for name, text in helps.items():
        c = sub.add_parser(name, help=text, description=text)
        c.add_argument("-f", "--file", dest="path", type=Path, required=True, help="the spec file (one file, not a directory)")
        if name == "deploy":
            c.add_argument("--image", required=True, help="the image to deploy: name[:tag] or name@sha256:digest")
        if name == "rollback":
            c.add_argument("--to", metavar="REF", help="a release (its number in `reconcile releases`, a revision or an "
                           "image); default: the warm standby")
        if name == "maintenance":
            c.add_argument("state", choices=("on", "off"), help="on: the site answers 503; off: the live color answers again")
            c.add_argument("--message", help='the page\'s message (one line, without " \\ < > &); default: the one in the spec')
        if name in ("deploy", "promote"):
            c.add_argument("--force", action="store_true", help="write even when the spec and what Nginx serves disagree")
        if name == "releases":
            c.add_argument("--json", action="store_true", help="machine-readable output")
        else:
            how = c.add_mutually_exclusive_group()
            how.add_argument("--apply", action="store_true", help="after writing, converge at once (the path of --once)")
            how.add_argument("--dry-run", action="store_true", help="print the diff; write nothing")
        add_notify_argument(c)  # --apply: the release events of the converge
        add_state_dir(c)
        c.add_argument("--lock-timeout", type=nonneg, default=30.0, help="--apply: seconds to wait for another run's lock")
        c.add_argument("--log-format", choices=("auto", "json", "console"), default="auto")
        c.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
        c.add_argument("--backoff-base", type=positive, default=60.0, help="--apply: as for --once")
        c.add_argument("--backoff-max", type=positive, default=3600.0, help="--apply: as for --once")
        c.add_argument("--metrics-textfile", type=Path, help="--apply: as for --once")
        c.add_argument("--docker-url", default=None, help="Docker daemon URL (default: DOCKER_HOST or the local socket)")
    return p


def main(argv: list[str]) -> int:
    opts = ReleaseOptions.from_args(build_parser().parse_args(argv))  # the Namespace ends here
    host = _Host(opts.run, runtime.open_notifier(opts.run) if opts.apply else None)  # --apply: the converge's events
    if opts.command == "releases":
        try:
            return _releases(opts, host)
        except ControllerError as e:
            err(str(e))
            return EXIT_INVALID
        finally:
            host.close()
    try:
        try:
            before, text, cur = _read(opts.path)
            edited = _decide(opts, text, cur, host)
        except ControllerError as e:
            err(str(e))
            return EXIT_INVALID
        after = edited.text.encode("utf-8")
        sys.stdout.write(unified_diff(text, edited.text, str(opts.path)))
        if opts.dry_run:
            print(f"{cur.name}: --dry-run: {opts.path} not written")
            return EXIT_OK
        from controller.kernel.files import write_spec

        try:
            write_spec(opts.path, after, before)
        except ControllerError as e:
            err(str(e))
            return EXIT_INVALID
        s = edited.app.spec
        if opts.command == "maintenance":
            print(f"{cur.name}: wrote {opts.path}: maintenance {'on' if opts.maintenance else 'off'}")
        else:
            print(f"{cur.name}: wrote {opts.path}: {s.activeColor} is to serve {s.image}")
        if not opts.apply:
            return EXIT_OK
        configure(opts.run.log_format, level=opts.run.log_level)  # the logs of the converge, as for --once
        return _apply(opts, host)
    finally:
        host.close()


class _Host:
    """The run's parts (controller/runtime/build.py), built once, when the host is first looked at: `deploy --force`
    edits a checkout in CI, without Docker."""

    def __init__(self, settings: Settings, notifier: Notifier | None = None) -> None:
        self.settings = settings
        self.rt: runtime.Runtime | None = None
        self.notifier = notifier  # --apply with --notify-url

    def get(self, accessories: list[Accessory] | None = None) -> runtime.Runtime:
        """`accessories`: as `runtime.build` takes them (a list: an accessory reconciler, feeding dependsOn). A
        Runtime built without one, to look at the host first, is built again when one is asked for."""
        if self.rt is not None and accessories is not None and self.rt.accessories is None:
            self.rt.close()
            self.rt = None
        if self.rt is None:
            self.rt = runtime.build(self.settings, notifier=self.notifier, accessories=accessories)
        return self.rt

    def close(self) -> None:
        if self.rt is not None:
            self.rt.close()
        if self.notifier is not None:
            self.notifier.close(runtime.NOTIFY_CLOSE_WAIT)  # after the converge: its lock is released


def _read(path: Path) -> tuple[bytes, str, Current]:
    from controller.kernel.files import read_spec

    if path.is_dir():
        raise SpecError(f"{path}: is a directory; give the one spec file to edit")
    before = read_spec(path)  # the trust checks of every spec read: owner, mode, links, regular file
    try:
        text = before.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"{path}: cannot read: not UTF-8 ({e.reason} at byte {e.start})") from None
    return before, text, read_current(text, str(path))


def _decide(opts: ReleaseOptions, text: str, cur: Current, host: _Host) -> Edited:
    source = str(opts.path)
    if cur.active_color not in ("blue", "green"):
        raise SpecError(f"{source}: spec.activeColor: {cur.active_color!r} is not blue or green")
    active: Color = "blue" if cur.active_color == "blue" else "green"
    to = other(active)
    if opts.command == "maintenance":
        assert opts.maintenance is not None  # required by the parser
        m = _validated(text, source).spec.maintenance
        block: dict[str, str | bool] = {"enabled": opts.maintenance}
        if (msg := opts.message if opts.message is not None else m.message if m is not None else None) is not None:
            block["message"] = msg
        return edit(text, source, {}, blocks={"maintenance": block})
    if opts.command == "deploy":
        assert opts.image is not None  # required by the parser
        edited = edit(text, source, {"image": opts.image, "activeColor": to})
    elif opts.command == "promote":
        if not cur.has_preview:
            raise Refused(f"{source}: spec.preview is not set: nothing to promote")
        if cur.preview_image is None:
            raise Refused(f"{source}: spec.preview.image: missing; nothing to promote")
        if cur.preview_image == cur.image:
            raise Refused(f"{source}: spec.preview.image is the live image {cur.image}: nothing to promote")
        edited = edit(text, source, {"image": cur.preview_image, "activeColor": to}, remove=("preview",))
    else:
        edited = None
    if edited is not None and opts.force and not opts.apply:
        _note_preview_env(cur)
        return edited  # forced: nothing on this host is looked at (a CI job editing a checkout)
    # The host is observed with the app as it will be (same names, ports and Nginx files; only image and color differ).
    app = edited.app if edited is not None else edit(text, source, {"activeColor": to}).app
    problem = host_problem(app) or state_dir_problem(app, opts.run.state_dir)
    if problem:
        raise SpecError(f"{source}: {problem}")
    rt = host.get()
    obs = _observe(app, rt)
    if opts.command == "rollback" and opts.to is not None:
        _check_agreement(source, app, cur, active, obs)
        ledger = rt.store.load_releases(app.name)
        target = ledger.find(opts.to)
        if target is None:
            raise Refused(f"{source}: refused: no release of {app.name} matches {opts.to!r} (see reconcile releases -f {source})")
        row = next(r for r in _table(rt, app, obs, ledger) if r.release is target)
        if row.way == "live":
            raise Refused(f"{source}: refused: release #{target.number} ({target.image}) is the live release ({row.why})")
        if row.way == "no":
            raise Refused(f"{source}: refused: release #{target.number} ({target.image}) cannot be rolled back to: {row.why}")
        err(f"note: rollback to release #{target.number} ({target.image}): {row.why}")
        return edit(text, source, {"image": target.image, "activeColor": to})
    if opts.command == "rollback":
        standby = obs.containers[to]
        why = _not_warm(app, to, obs)
        if why is not None or standby is None:
            raise Refused(f"{source}: refused: no warm standby to roll back to: {app.container_name(to)} {why}")
        edited = edit(text, source, {"image": standby.image, "activeColor": to})
        _note_recreate(rt, edited.app, to)
        return edited
    assert edited is not None
    if not opts.force:
        _check_agreement(source, app, cur, active, obs)
    if opts.command == "promote":
        _note_preview_env(cur)
        idle = obs.containers[to]
        if idle is None or _not_warm(app, to, obs) is not None or idle.image != cur.preview_image:
            err(f"note: {app.container_name(to)} does not run a healthy {cur.preview_image}: the switch waits for a deploy of it")
    return edited


def _note_preview_env(cur: Current) -> None:
    if cur.preview_env:
        err(f"note: spec.preview.env ({', '.join(cur.preview_env)}) is removed with the preview: the release runs with "
            "spec.env only (a preview container that ran with it is recreated before the switch)")


def _note_recreate(rt: runtime.Runtime, app: BlueGreenApp, color: Color) -> None:
    """Say when converging the edit recreates `color` (its container's revision is not the spec's: env, ports or
    labels changed since it was made): then the rollback is a health-gated deploy, not a switch."""
    from controller.world.actions import CreateContainer

    try:
        p, _, _ = rt.apps.plan_only(app)
    except ControllerError:
        return  # only a note: the plan of the converging run says it again
    if any(isinstance(a, CreateContainer) and a.color == color for a in p.actions):
        err(f"note: {app.container_name(color)} was made from another revision of the spec (env, ports or labels changed "
            "since): converging recreates it, health-gated, before the switch; not an instant rollback")


def _validated(text: str, source: str) -> BlueGreenApp:
    from controller.spec.app import parse_app

    return parse_app(text, source)


def _observe(app: BlueGreenApp, rt: runtime.Runtime) -> Observed:
    """The host as a pass gathers it (the same observation as `--plan`); nothing is written."""
    from controller.app.gather import gather

    return gather(app, rt.world, rt.apps.store).observed


def _not_warm(app: BlueGreenApp, color: Color, obs: Observed) -> str | None:
    """Why `color`'s container is no warm standby (a switch to it would not be instant and safe), or None. `obs` was
    gathered for the spec that makes `color` the active one: a running standby that passes is inspected (rule 1)."""
    c = obs.containers[color]
    if c is None:
        return "does not exist"
    if not c.ours(app.name):
        return "was not created by the controller for this app"
    if not c.running or c.restarting:
        return f"is not running ({c.state})"
    if c.healthy is not True:
        return f"fails its health check ({c.health_detail or 'no answer'})"
    if obs.serving == color:
        return None  # it serves already: no switch to prove
    stable = app.spec.healthCheck.stableSeconds
    if c.restart_count is None or c.started_at is None:
        return "could not be inspected (removed or exited meanwhile?)"
    if c.restart_count:
        return f"was restarted {c.restart_count} times by Docker since it was started: not steady (a crash loop?)"
    if not c.steady(obs.at, stable):
        return f"has run {max(0.0, obs.at - c.started_at):.1f}s since it was started, not stableSeconds ({stable:g}s)"
    return None


def _check_agreement(source: str, app: BlueGreenApp, cur: Current, active: Color, obs: Observed) -> None:
    """The spec must describe what runs: Nginx serves its activeColor, from our container running its image."""
    serving = obs.serving
    hint = "a deploy still in progress or failed? converge (reconcile --once) or roll back first, or --force"
    if serving != active:
        seen = f"Nginx serves {serving}" if serving else f"what Nginx serves is unknown ({obs.route.detail or 'no answer'})"
        raise Refused(f"{source}: refused: the spec says {active} serves, but {seen} ({hint})")
    live = obs.containers[active]
    if live is None or not live.ours(app.name):
        raise Refused(f"{source}: refused: Nginx serves {active}, but {app.container_name(active)} is not the controller's container ({hint})")
    if live.image != cur.image:
        raise Refused(f"{source}: refused: {app.container_name(active)} runs {live.image}, not the spec's image {cur.image} ({hint})")


def _table(rt: runtime.Runtime, app: BlueGreenApp, obs: Observed, ledger: Releases) -> list[Row]:
    """The releases and what rolling back to each would be now, judged on the observed host. `obs` was gathered for
    `app` with the idle color active (the standby is inspected as the color that is to take traffic: rule 1)."""
    extra = rt.apps.resolver(app).revision_extra
    idle = other(obs.serving or app.spec.activeColor)
    standby = obs.containers[idle]

    def with_image(r: Release) -> BlueGreenApp:
        return app.model_copy(update={"spec": app.spec.model_copy(update={"image": r.image})})

    return assess(
        ledger,
        Host(
            config_revision=lambda r: with_image(r).revision(r.color, extra),
            idle_revision=lambda r: with_image(r).revision(idle, extra),
            obtainable=rt.world.image_obtainable,
            warm_revision=standby.revision if standby is not None and _not_warm(app, idle, obs) is None else None,
            idle=idle,
        ),
    )


def _releases(opts: ReleaseOptions, host: _Host) -> int:
    """`reconcile releases -f SPEC [--json]`: the table; reads the spec, the state dir and the host, writes nothing."""
    _, text, _ = _read(opts.path)
    app = _validated(text, str(opts.path))
    problem = host_problem(app) or state_dir_problem(app, opts.run.state_dir)
    if problem:
        raise SpecError(f"{opts.path}: {problem}")
    rt = host.get()
    flipped = app.model_copy(update={"spec": app.spec.model_copy(update={"activeColor": other(app.spec.activeColor)})})
    obs = _observe(flipped, rt)  # gathered as for `rollback`: the idle color inspected as the one to take traffic
    rows = _table(rt, flipped, obs, rt.store.load_releases(app.name))
    now = rt.world.now()
    if opts.json:
        print(json.dumps(table_json(app.name, rows, now), indent=2))
    else:
        sys.stdout.write(render_table(app.name, rows, now))
    return EXIT_OK


def _apply(opts: ReleaseOptions, host: _Host) -> int:
    """Converge the written spec now, as `reconcile --once -f DIR` converges it (DIR: the spec's directory), on the
    same Runtime: the accessories there that it depends on (`dependsOn`) or whose network it joins first, its
    dependsOn gate checked against them; the directory's other apps and accessories are left alone."""
    spec = opts.path.resolve()
    try:
        loaded = select(spec.parent, state_dir=opts.run.state_dir)
    except ControllerError as e:
        err(str(e))
        return EXIT_INVALID
    apps = [a for f, a in loaded.apps_by_file.items() if f.resolve() == spec]
    wanted = {d for a in apps for d in a.spec.dependsOn or []}
    nets = {a.spec.network for a in apps if a.spec.network}
    # Its own problems and those of the accessories it depends on; the rest of the directory's are not this run's.
    ours = [p for p in loaded.problems if p.app in wanted or (p.file is not None and p.file.resolve() == spec)]
    for line in modes.problem_lines(Selection(problems=ours), opts.path):
        err(line)
    if not apps:
        return EXIT_INVALID
    accessories = [acc for acc in loaded.accessories if acc.name in wanted or (acc.spec.network is not None and acc.spec.network in nets)]
    rt = host.get(accessories if runtime.needs_accessories(accessories, apps) else None)
    return modes.once(rt, apps, accessories)
