"""The one-shot modes' accessory part (issue 13): `--once` reconciles the accessories of the spec directory before
its apps (under the same lock), `--plan` and `--status` show them beside the apps, and an app's `dependsOn`
and `network` are checked against what the accessory pass observes. The runner is built by controller/runtime/build.py.
Imported by the one-shot modes; the accessory modules themselves load only with a runner.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from controller.kernel.errors import EXIT_FAIL, EXIT_INVALID, EXIT_OK, ControllerError
from controller.runtime.options import err

if TYPE_CHECKING:  # the accessory modules load only with a runner (runtime.needs_accessories)
    from controller.accessory.reconcile import AccessoryResult, AccessoryRunner
    from controller.spec.accessory import Accessory
    from controller.spec.app import BlueGreenApp


def summary(r: AccessoryResult) -> None:
    line = f"{r.accessory}: {r.result} (accessory"
    line += f", {len(r.actions_done)} actions)" if r.actions_done else ")"
    print(line)
    if r.error:
        err(f"{r.accessory}: {r.error}")
    elif r.plan is not None and not r.converged:
        for b in r.plan.blockers:
            err(f"{r.accessory}: {b.reason}: {b.message}")


def reconcile_first(runner: AccessoryRunner, accessories: list[Accessory], apps: list[BlueGreenApp]) -> tuple[int, list[BlueGreenApp]]:
    """Run the accessory pass; the exit code so far and the apps that may go on (a bad network refuses its app)."""
    code = EXIT_OK
    for r in runner.reconcile_all(accessories):
        summary(r)
        if not r.converged:
            code = EXIT_FAIL
    return _check_networks(runner, apps, code)


def _check_networks(runner: AccessoryRunner, apps: list[BlueGreenApp], code: int) -> tuple[int, list[BlueGreenApp]]:
    bad = runner.network_problems(apps)
    for name, message in sorted(bad.items()):
        err(f"{name}: {message}")
    return (max(code, EXIT_INVALID) if bad else code), [a for a in apps if a.name not in bad]


def plan_lines(
    runner: AccessoryRunner, accessories: list[Accessory], as_json: bool, apps: Sequence[BlueGreenApp] = ()
) -> tuple[int, list[Any]]:
    """Each accessory's plan (text or JSON rows); exit 1 when one is not in sync, 2 when an app's network is unknown."""
    from controller.accessory.reconcile import plan_json, render_plan

    code = EXIT_OK
    rows: list[Any] = []
    try:
        code, _ = _check_networks(runner, list(apps), code)
    except ControllerError as e:
        err(str(e))
        return EXIT_INVALID, rows
    if code == EXIT_INVALID:
        return code, rows
    index = runner._index(a.name for a in accessories)
    for acc in sorted(accessories, key=lambda a: a.name):
        try:
            p = runner.plan(acc, index)
        except ControllerError as e:
            err(f"{acc.name}: {e}")
            return EXIT_INVALID, rows
        rows.append(plan_json(p) if as_json else render_plan(p))
        if not p.converged:
            code = EXIT_FAIL
    return code, rows


def status_rows(runner: AccessoryRunner, accessories: list[Accessory]) -> tuple[int, list[dict[str, Any]]]:
    """`--status`: the accessories as the last pass left them, with health observed now."""
    code, rows = EXIT_OK, []
    index = runner._index(a.name for a in accessories)
    for acc in sorted(accessories, key=lambda a: a.name):
        p = runner.plan(acc, index)
        last = runner.store.load_accessory_status(acc.name) or {}
        rows.append(
            {
                "kind": "Accessory",
                "accessory": acc.name,
                "image": acc.spec.image,
                "ready": p.converged and p.healthy,
                "healthy": p.healthy,
                "inSync": p.converged,
                "diffs": list(p.diffs),
                "blockers": [{"reason": b.reason, "message": b.message} for b in p.blockers],
                "lastResult": last.get("result"),
                "lastReconcileId": last.get("reconcileId"),
            }
        )
        if not (p.converged and p.healthy):
            code = EXIT_FAIL
    return code, rows


def render_status(row: dict[str, Any]) -> str:
    state = "Ready" if row["ready"] else "NOT ready"
    lines = [f"{row['accessory']} (accessory, {row['image']}): {state}; healthy={row['healthy']}"]
    lines += [f"  ~ {d}" for d in row["diffs"]]
    lines += [f"  ! {b['reason']}: {b['message']}" for b in row["blockers"]]
    return "\n".join(lines)
