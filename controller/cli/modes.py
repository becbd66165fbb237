"""The one-shot modes on a built Runtime (controller/runtime/build.py): `--once` (also `deploy|rollback|promote|maintenance --apply`),
`--plan` and `--status`: what they print, and their exit codes (controller/cli/main.py's module doc).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.app.plan import Plan
from controller.app.reconcile import AppResult, Reconciler
from controller.cli import accessories as accessory_cli
from controller.kernel.errors import EXIT_FAIL, EXIT_INVALID, EXIT_OK, ControllerError, LockBusy
from controller.runtime.build import Runtime
from controller.runtime.options import Settings, err
from controller.spec.directory import Selection
from controller.store.counters import carry_over
from controller.store.metrics import Metrics
from controller.store.state import Lock
from controller.world.actions import ImageRemoval

if TYPE_CHECKING:  # the models load with the first spec validated (none on a spec-cache hit)
    from controller.spec.accessory import Accessory
    from controller.spec.app import BlueGreenApp


def problem_lines(sel: Selection, path: Path) -> list[str]:
    """One line per invalid file, and one per conflict (not one per side of it)."""
    lines: list[str] = []
    for p in sel.problems:
        line = f"{path}: {p.conflict}" if p.conflict is not None else p.message
        if line not in lines:
            lines.append(line)
    return lines


def _containers(rec: Reconciler) -> Any:
    from controller.app.observe import index_containers

    return index_containers(rec.world)


# --once ------------------------------------------------------------------------------------------------------
def once(rt: Runtime, apps: list[BlueGreenApp], accessories: list[Accessory]) -> int:
    """Accessories first (the apps' networks and dependsOn need them), then every app in parallel, under the lock."""
    rec, run = rt.apps, rt.settings
    acc_code = EXIT_OK
    try:
        with Lock(run.state_dir, run.lock_timeout):
            if rt.accessories is not None:
                acc_code, apps = accessory_cli.reconcile_first(rt.accessories, list(accessories), apps)
            code = max(_converge(rec, apps), acc_code)
            # Under the lock: the counters continue from the state dir (controller/store/counters.py).
            return export(rec.metrics, run, code, carry=True)
    except ControllerError as e:  # the lock itself: busy, or its directory cannot be trusted
        err(str(e))
        if isinstance(e, LockBusy):
            return e.exit_code  # the run holding the lock writes the textfile; this one did nothing
        for a in apps:  # still a (failed) run for monitoring
            rec.metrics.unreachable(a.name)
        return export(rec.metrics, run, e.exit_code, carry=False)


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


def export(metrics: Metrics, run: Settings, code: int, *, carry: bool) -> int:
    """--metrics-textfile: continue the counters from the state dir (`carry`, lock held), then write the file."""
    if not run.metrics_textfile:
        return code
    if carry:
        carry_over(metrics, run.state_dir)
    return code if _write_textfile(metrics, run.metrics_textfile) else max(code, EXIT_FAIL)


def export_invalid(metrics: Metrics, run: Settings) -> None:
    """No valid spec: the run's `invalid` counts still continue the stored counters, under the lock if it is free
    at once (the invalid input is what this run reports: no wait, no second line)."""
    try:
        with Lock(run.state_dir, 0):
            export(metrics, run, EXIT_INVALID, carry=True)
    except LockBusy:
        pass  # another run holds it: that run writes the textfile
    except ControllerError:  # the state dir cannot be used: the counts of this run alone
        export(metrics, run, EXIT_INVALID, carry=False)


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
    from concurrent.futures import ThreadPoolExecutor

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


# --plan ------------------------------------------------------------------------------------------------------
def plan(rec: Reconciler, apps: list[BlueGreenApp], as_json: bool, runner: Any = None, accessories: Any = ()) -> int:
    acc_code, acc_rows = accessory_cli.plan_lines(runner, list(accessories), as_json, apps) if runner is not None else (EXIT_OK, [])
    if acc_code == EXIT_INVALID:
        return acc_code
    try:
        containers = _containers(rec)
        # With the images: what the next converged pass would prune (`Plan.prune`), from the same decide.
        plans = [rec.plan_only(a, containers, images=True)[0] for a in apps]
    except ControllerError as e:
        err(str(e))
        return EXIT_INVALID
    stale = {p.app: p.secrets_stale for p in plans if p.secrets_stale}  # secrets rotated since the live color started
    if as_json:
        print(json.dumps([*acc_rows, *({**_plan_json(p), "secretsStale": stale.get(p.app), "prune": _prune_json(p.prune)} for p in plans)], indent=2))
    else:
        for row in acc_rows:
            print(row)
        for p in plans:
            print(render_plan(p, stale.get(p.app)) + _render_prune(p.prune))
    return max(acc_code, EXIT_OK if all(p.converged for p in plans) and not stale and not any(p.prune for p in plans) else EXIT_FAIL)


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


# --status ----------------------------------------------------------------------------------------------------
def status(rec: Reconciler, apps: list[BlueGreenApp], as_json: bool, runner: Any = None, accessories: Any = ()) -> int:
    from controller.app.status import render_text
    from controller.store.documents import STATUS

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
