"""The executor's side of the deploy gates (controller/app/gates.py plans them): thin, through `World`.

A hook runs in a one-off container of the new image with the color's env (secrets included) and network,
labelled with its app, phase and revision. Kill -9 safety: the container is found again by those labels
before one is created, so a pass that resumes after a killed one waits for (or collects) the same run; the
run is remembered (memory.json "hooks": started, then its exit code and last lines) before its container is
removed, so a later pass never starts it again for that revision. Output is read further back than it is kept
(HOOK_LOG_LINES_READ) and redacted whole (a multi-line secret spans lines) before any cut, then trimmed to its
last HOOK_OUTPUT_LINES lines of at most LINE_CAP characters: those go to the log line by line, and the last
STATUS_LINES to the record that status.json shows.

Output is read only once the secrets of the run's revision are registered with the redactor (`Context.secrets`,
loaded by the reconciler for any plan that reads output); a hook container carries its revision's secrets
fingerprint (and its own timeout) as labels. Output of a run whose secrets are not registered (SSM unreachable,
rotated since, a container without the label) is not read: the record says so instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from controller.app.gates import AFTER, hook_container_name, hook_labels
from controller.app.routing import upstream_address
from controller.kernel.errors import CheckFailed, ControllerError, HookFailed, Interrupted, one_line
from controller.kernel.logs import redact_text
from controller.world.actions import Action, RemoveHook, RunCheck, RunHook
from controller.world.facts import (
    FINGERPRINT_KEY,
    LABEL_COLOR,
    LABEL_FINGERPRINT,
    LABEL_HOOK_TIMEOUT,
    NO_SECRETS,
    HookRecord,
)
from controller.world.protocol import HOOK_OUTPUT_LINES, HookRequest

if TYPE_CHECKING:
    from controller.app.apply import Context

STATUS_LINES = 10  # last lines of a hook's output kept in memory.json / status.json
WAIT_SLICE = 1.0  # seconds: a hook wait looks at should_stop this often
LINE_CAP = 500  # characters of an output line kept


def shown_output(lines: tuple[str, ...]) -> tuple[str, ...]:
    """What may be logged and stored of an output: redacted as one text first, then cut; blank lines dropped."""
    text = redact_text("\n".join(lines))
    kept = [ln.rstrip() for ln in text.split("\n") if ln.strip()]
    return tuple(ln[:LINE_CAP] for ln in kept[-HOOK_OUTPUT_LINES:])


def secrets_of(ctx: Context) -> str:
    """The secrets fingerprint of this pass's desired revision (a hook label; NO_SECRETS: it has none)."""
    return ctx.revision_extra.get(FINGERPRINT_KEY) or NO_SECRETS


def kept_output(ctx: Context, read: Callable[[], tuple[str, ...]], secrets: str | None, what: str) -> tuple[str, ...]:
    """`read()`'s output as `shown_output` keeps it, when the values of `secrets` (a run's fingerprint; None:
    unknown) are registered with the redactor; else it is not read at all, and one line says why."""
    if secrets != NO_SECRETS and (secrets is None or secrets != ctx.secrets):
        ctx.log.warning("output.withheld", what=what, secrets=secrets)
        return (f"(output not kept: the secret values of {what} could not be loaded to redact it)",)
    return shown_output(read())


def run_hook(ctx: Context, a: Action) -> None:
    assert isinstance(a, RunHook)
    if a.phase != AFTER:
        _hook(ctx, a)
        return
    try:
        _hook(ctx, a)
    except Interrupted:
        raise
    except ControllerError as e:
        # afterSwitch does not gate: the switch is done; its failure is logged and remembered, not retried.
        ctx.log.warning("hook.after_switch_failed", phase=a.phase, error=str(e))


def _hook(ctx: Context, a: RunHook) -> None:
    app, w = ctx.app, ctx.world
    hooks = app.spec.hooks
    spec = getattr(hooks, a.phase, None) if hooks is not None else None
    if spec is None:
        return  # the spec changed between plan and apply: nothing to run
    labels = hook_labels(app, a.phase, a.revision)
    name = hook_container_name(app, a.phase, a.revision)
    previous = ctx.hook_record(a.phase, a.revision)
    found = w.find_hook(labels)
    if found is not None and found.state in ("exited", "dead") and (previous is None or previous.state != "running"):
        # A finished run whose result is already remembered (a kill -9 before its removal): a retry runs anew.
        w.remove_container(found.name)
        found = None
    if found is None and previous is not None and previous.state == "running":
        # Started by an earlier pass, then its container vanished (removed by hand?) before a result: it may
        # have run. Not started again silently; the deploy fails and is retried after its backoff.
        ctx.remember_hook(HookRecord(a.phase, a.revision, "lost", previous.started_at, None, w.now(), ()))
        raise HookFailed(f"hooks.{a.phase} for revision {a.revision}: its container {name} vanished before it finished; it may have run")
    if found is None:
        env = {**app.spec.env, **ctx.env, "BLUEGREEN_APP": app.name, "BLUEGREEN_COLOR": a.color,
               "BLUEGREEN_REVISION": a.revision, "BLUEGREEN_HOOK": a.phase}  # fmt: skip
        w.create_hook(
            HookRequest(
                name=name,
                image=app.spec.image,
                labels={**app.spec.labels, **labels, LABEL_COLOR: a.color, LABEL_FINGERPRINT: secrets_of(ctx),
                        LABEL_HOOK_TIMEOUT: f"{spec.timeoutSeconds:g}"},
                env=env,
                command=list(spec.command),
                network=app.spec.network,
            )
        )
        found = w.find_hook(labels)
        if found is None:
            raise HookFailed(f"hooks.{a.phase}: container {name} vanished right after it was created")
    name = found.name
    started = found.started_at if found.state != "created" and found.started_at is not None else w.now()
    if found.state == "created":
        ctx.remember_hook(HookRecord(a.phase, a.revision, "running", started))
        w.start_container(name)
    else:
        ctx.log.info("hook.resumed", phase=a.phase, container=name, state=found.state)
        if previous is None or previous.state != "running":
            ctx.remember_hook(HookRecord(a.phase, a.revision, "running", started))
    code = found.exit_code if found.state in ("exited", "dead") else None
    deadline = started + spec.timeoutSeconds
    while code is None:
        left = deadline - w.now()
        if left <= 0:
            break
        code = w.wait_hook(name, min(WAIT_SLICE, left))
        if code is None and ctx.should_stop():
            raise Interrupted(f"stop requested while hooks.{a.phase} runs in {name}; the next pass collects it")
    output = kept_output(ctx, lambda: _logs(ctx, name), secrets_of(ctx), f"revision {a.revision}")
    for line in output:
        ctx.log.info("hook.output", phase=a.phase, container=name, line=line)
    ctx.remember_hook(HookRecord(a.phase, a.revision, "done", started, code, w.now(), output[-STATUS_LINES:]))
    w.remove_container(name)  # after the record: a kill -9 in between leaves a finished container, removed later
    last = one_line(output[-1], 200) if output else "no output"
    if code is None:
        raise HookFailed(f"hooks.{a.phase} ({spec.command[0]}) did not finish within {spec.timeoutSeconds:g}s; killed (last: {last})")
    if code != 0:
        raise HookFailed(f"hooks.{a.phase} ({spec.command[0]}) exited {code}: {last}")
    ctx.log.info("hook.done", phase=a.phase, exit_code=code)


def _logs(ctx: Context, name: str) -> tuple[str, ...]:
    try:
        return ctx.world.hook_logs(name)
    except ControllerError as e:
        return (f"(output unavailable: {e})",)


def run_check(ctx: Context, a: Action) -> None:
    assert isinstance(a, RunCheck)
    app, w = ctx.app, ctx.world
    checks = app.spec.checks.beforeSwitch if app.spec.checks is not None else []
    if a.index >= len(checks):
        return  # the spec changed between plan and apply
    check = checks[a.index]
    address = upstream_address(app, a.color)
    what = f"checks.beforeSwitch[{a.index}]"
    if check.http is not None:
        h = check.http
        r = w.probe_check(f"http://{address}{h.path}", h.expectStatus, h.bodyContains, check.timeoutSeconds)
        if not r.ok:
            raise CheckFailed(f"{what} GET {h.path} on {a.color}: {r.detail}")
        return
    argv = list(check.command or [])
    host, _, port = address.rpartition(":")
    env = {
        "BLUEGREEN_TARGET_URL": f"http://{address}",
        "BLUEGREEN_TARGET_HOST": host.strip("[]"),
        "BLUEGREEN_TARGET_PORT": port,
        "BLUEGREEN_APP": app.name,
        "BLUEGREEN_COLOR": a.color,
        "BLUEGREEN_REVISION": a.revision,
    }
    res = w.run_check(argv, env, check.timeoutSeconds)
    output = kept_output(ctx, lambda: res.output, secrets_of(ctx), f"revision {a.revision}")
    for line in output:
        ctx.log.info("check.output", check=what, line=line)
    last = one_line(output[-1], 200) if output else "no output"
    if res.exit_code is None:
        raise CheckFailed(f"{what} ({argv[0]}) did not finish within {check.timeoutSeconds:g}s; killed (last: {last})")
    if res.exit_code != 0:
        raise CheckFailed(f"{what} ({argv[0]}) exited {res.exit_code}: {last}")


def remove_hook(ctx: Context, a: Action) -> None:
    """A hook container left behind: finished, or (`timed_out`) still running past its own timeout. A run still
    remembered as running gets its result recorded first (a spec changed back to that revision must find it done,
    not lost); one stopped at its timeout is recorded as such (done, no exit code), like a run `_hook` stopped."""
    assert isinstance(a, RemoveHook)
    w = ctx.world
    rec = ctx.hook_record(a.phase, a.revision) if a.phase and a.revision else None
    running = rec is not None and rec.state == "running"
    found = w.find_hook(hook_labels(ctx.app, a.phase, a.revision)) if running or a.timed_out else None
    if found is not None and found.name == a.name:
        over = found.state in ("exited", "dead")
        if (over and running) or (a.timed_out and not over):
            output = kept_output(ctx, lambda: _logs(ctx, a.name), a.secrets, f"revision {a.revision}")
            if not over:
                ctx.log.warning("hook.timed_out", phase=a.phase, revision=a.revision, container=a.name)
                output = (*output, f"(killed: {a.reason})")
            started = rec.started_at if rec is not None and running else found.started_at or w.now()
            code = found.exit_code if over else None
            ctx.remember_hook(HookRecord(a.phase, a.revision, "done", started, code, w.now(), output[-STATUS_LINES:]))
    w.remove_container(a.name)


HANDLERS: dict[type[Action], Callable[[Context, Any], None]] = {RunHook: run_hook, RunCheck: run_check, RemoveHook: remove_hook}
