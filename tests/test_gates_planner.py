"""Deploy gates (issue 12 items 2-3) on the in-memory world: spec.checks.beforeSwitch and spec.hooks.

The planner puts them between "healthy" and the switch (so --plan shows them); a failing check or
beforeSwitch hook is a failed deploy (traffic untouched, revision remembered, backoff); a hook that
exited 0 never runs again for its revision, across a retry and a kill -9 (FakeWorld's Crash).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from controller.app.gates import gates_fingerprint
from controller.spec.app import BlueGreenApp
from controller.store.state import StateStore
from controller.world.actions import RemoveHook, RunCheck, RunHook
from controller.world.facts import LABEL_HOOK, HookRecord, Memory, hook_key
from controller.world.fake import Crash
from tests.factories import make_app
from tests.fakes import CheckedWorld, crash_then_converge, reconciler, world_for
from tests.support.plans import plan_for

HOOK = {"beforeSwitch": {"command": ["migrate", "--up"], "timeoutSeconds": 30}}
CHECKS = {"beforeSwitch": [{"http": {"path": "/version", "bodyContains": "dialogue:"}}, {"command": ["smoke", "--fast"]}]}


def _app(image: str = "dialogue:1", color: str = "blue", **spec: Any) -> BlueGreenApp:
    return make_app(image=image, activeColor=color, **spec)


def verbs(app: BlueGreenApp, w: CheckedWorld, mem: Memory | None = None) -> list[str]:
    p = plan_for(app, w, mem or Memory())
    return [f"{a.verb}:{a.color}" for a in p.actions] + [f"!{b.reason}" for b in p.blockers]


def _deployed_v1(tmp_path: Path, **spec: Any) -> tuple[CheckedWorld, StateStore]:
    """v1 on blue, converged (its own gates passed)."""
    app = _app(**spec)
    w = world_for(app)
    assert reconciler(w, tmp_path / "state").reconcile(app).converged
    return w, StateStore(tmp_path / "state")


def test_gates_sit_between_healthy_and_the_switch() -> None:
    app = _app("dialogue:2", "green", hooks={**HOOK, "afterSwitch": {"command": ["notify"]}}, checks=CHECKS)
    w = world_for(app)
    assert verbs(app, w) == [
        "CreateContainer:green",
        "WaitHealthy:green",
        "RunHook:green",
        "RunCheck:green",
        "RunCheck:green",
        "SwitchRoute:green",
        "WriteMarker:green",
        "RunHook:green",
    ]
    p = plan_for(app, w, Memory())
    hooks = [a for a in p.actions if isinstance(a, RunHook)]
    assert [h.phase for h in hooks] == ["beforeSwitch", "afterSwitch"] and {h.revision for h in hooks} == {p.revisions["green"]}
    assert [a.index for a in p.actions if isinstance(a, RunCheck)] == [0, 1]


def test_without_gates_the_plan_is_unchanged() -> None:
    plain, gated = _app("dialogue:2", "green"), _app("dialogue:2", "green", checks={"beforeSwitch": []}, hooks={})
    w = world_for(plain)
    assert verbs(plain, w) == verbs(gated, w)


def test_a_converged_world_runs_no_gates_and_a_hook_that_succeeded_is_not_planned_again(tmp_path: Path) -> None:
    w, store = _deployed_v1(tmp_path, hooks=HOOK, checks=CHECKS)
    app = _app(hooks=HOOK, checks=CHECKS)
    mem = store.load_memory(app.name)
    assert verbs(app, w, mem) == []
    assert len(w.hook_runs) == 1
    # Nginx taken back to nothing by hand: the switch again, checks again (every cutover), the hook not again.
    del w.files[app.upstream_file]
    w.reload()
    assert verbs(app, w, mem) == ["RunCheck:blue", "RunCheck:blue", "SwitchRoute:blue"]
    assert verbs(app, w, Memory()) == ["RunHook:blue", "RunCheck:blue", "RunCheck:blue", "SwitchRoute:blue"]


def test_rollback_runs_the_checks_but_not_the_hook_of_a_revision_that_ran_it(tmp_path: Path) -> None:
    w, store = _deployed_v1(tmp_path, hooks=HOOK)
    v2 = _app("dialogue:2", "green", hooks=HOOK, checks=CHECKS)
    assert reconciler(w, tmp_path / "state").reconcile(v2).converged
    assert len(w.hook_runs) == 2
    back = _app("dialogue:1", "blue", hooks=HOOK, checks=CHECKS)
    assert verbs(back, w, store.load_memory("dialogue")) == ["RunCheck:blue", "RunCheck:blue", "SwitchRoute:blue", "WriteMarker:blue"]


def test_a_failing_check_keeps_traffic_and_backs_off_like_a_failed_deploy(tmp_path: Path) -> None:
    w, store = _deployed_v1(tmp_path, hooks=HOOK, checks=CHECKS)
    w.check_script = lambda argv, env: (4, ("smoke failed", f"target {env['BLUEGREEN_TARGET_URL']}"))
    v2 = _app("dialogue:2", "green", hooks=HOOK, checks=CHECKS)
    rec = reconciler(w, tmp_path / "state")
    r = rec.reconcile(v2)
    assert r.result == "degraded" and r.error is not None
    assert "checks.beforeSwitch[1] (smoke) exited 4: target http://127.0.0.1:18082" in r.error
    assert w.routed("dialogue") == ["127.0.0.1:18081"] and w.files[v2.marker_path] == "blue\n"
    mem = store.load_memory("dialogue")
    rev = r.plan.revisions["green"] if r.plan else ""
    assert mem.failures[rev].reason == "CheckFailed" and mem.failures[rev].count == 1
    assert mem.hooks[hook_key("beforeSwitch", rev)].succeeded  # the hook ran (once) before the check failed
    assert verbs(v2, w, mem) == ["!BackingOff"]
    # Past the backoff: the checks run again, the hook does not; now they pass.
    w.clock += 61
    w.check_script = lambda argv, env: (0, ())
    assert verbs(v2, w, mem)[:3] == ["RunCheck:green", "RunCheck:green", "SwitchRoute:green"]
    assert rec.reconcile(v2).converged
    assert w.routed("dialogue") == ["127.0.0.1:18082"]
    assert [n for n in w.hook_runs if rev in n] == [f"dialogue-hook-beforeswitch-{rev}"]
    assert rev not in store.load_memory("dialogue").failures


def test_an_http_check_whose_body_lacks_the_text_fails_the_deploy(tmp_path: Path) -> None:
    w, _store = _deployed_v1(tmp_path)
    w.pages["/version"] = (200, "maintenance")  # the new color answers, but not with the text expected
    v2 = _app("dialogue:2", "green", checks=CHECKS)
    r = reconciler(w, tmp_path / "state").reconcile(v2)
    assert r.result == "degraded" and r.error is not None and "checks.beforeSwitch[0] GET /version on green" in r.error
    assert w.routed("dialogue") == ["127.0.0.1:18081"]


def test_a_failing_hook_keeps_traffic_and_is_retried_only_after_the_backoff(tmp_path: Path) -> None:
    w, store = _deployed_v1(tmp_path)
    w.hook_script = lambda argv, env: (2, ("applying 0042", "error: relation exists"))
    v2 = _app("dialogue:2", "green", hooks=HOOK, checks=CHECKS)
    rec = reconciler(w, tmp_path / "state")
    r = rec.reconcile(v2)
    assert r.result == "degraded" and r.error is not None and "hooks.beforeSwitch (migrate) exited 2: error: relation exists" in r.error
    assert w.routed("dialogue") == ["127.0.0.1:18081"]
    assert not any(LABEL_HOOK in c.fact.labels for c in w.containers.values())  # removed after the run
    mem = store.load_memory("dialogue")
    rev = r.plan.revisions["green"] if r.plan else ""
    run = mem.hooks[hook_key("beforeSwitch", rev)]
    assert (run.state, run.exit_code, run.output) == ("done", 2, ("applying 0042", "error: relation exists"))
    assert mem.failures[rev].reason == "HookFailed"
    assert rec.reconcile(v2).result == "degraded" and len(w.hook_runs) == 1  # backing off: not run again
    w.clock += 61
    w.hook_script = lambda argv, env: (0, ())
    assert rec.reconcile(v2).converged and len(w.hook_runs) == 2


def test_the_hook_gets_the_color_env(tmp_path: Path) -> None:
    seen: list[dict[str, str]] = []
    w, _ = _deployed_v1(tmp_path)

    def script(argv: list[str], env: dict[str, str]) -> tuple[int, tuple[str, ...]]:
        seen.append(dict(env))
        return 0, ()

    w.hook_script = script
    v2 = _app("dialogue:2", "green", hooks=HOOK, env={"DB": "mongo://db"})
    assert reconciler(w, tmp_path / "state").reconcile(v2).converged
    assert len(seen) == 1
    assert seen[0]["DB"] == "mongo://db" and seen[0]["BLUEGREEN_HOOK"] == "beforeSwitch" and seen[0]["BLUEGREEN_COLOR"] == "green"


@pytest.mark.parametrize("crash_after", range(0, 7))
def test_a_hook_runs_once_per_revision_across_a_kill_9_at_any_mutation(tmp_path: Path, crash_after: int) -> None:
    """Kill the controller at each of its mutations after the new color is up; the next passes finish the
    deploy, and the hook has been started exactly once (collected, not re-run) with nothing left behind."""
    w, store = _deployed_v1(tmp_path)
    w.hook_seconds = 5.0
    v2 = _app("dialogue:2", "green", hooks=HOOK)
    crash_then_converge(w, tmp_path / "state", v2, crash_after + 1)  # +1: the green container's own create goes through
    assert w.routed("dialogue") == ["127.0.0.1:18082"]
    assert len(w.hook_runs) == 1, w.mutations
    assert not any(LABEL_HOOK in c.fact.labels for c in w.containers.values())
    rev = plan_for(v2, w, Memory()).revisions["green"]
    assert store.load_memory("dialogue").hooks[hook_key("beforeSwitch", rev)].succeeded


def test_a_finished_hook_container_left_by_a_crash_is_removed_and_a_running_one_collected(tmp_path: Path) -> None:
    w, store = _deployed_v1(tmp_path)
    v2 = _app("dialogue:2", "green", hooks=HOOK)
    rev = plan_for(v2, w, Memory()).revisions["green"]
    # A finished run whose record says done (the crash came between the record and the remove).
    w.crash_after = None
    store.record_hook("dialogue", HookRecord("beforeSwitch", "oldrev", "done", w.now(), 0, w.now()))
    from controller.world.protocol import HookRequest

    w.create_hook(HookRequest("dialogue-hook-beforeswitch-oldrev", "dialogue:1",
                              {"bluegreen.app": "dialogue", "bluegreen.managed-by": "bluegreen-controller", LABEL_HOOK: "beforeSwitch",
                               "bluegreen.revision": "oldrev"}, {}, ["migrate"]))  # fmt: skip
    w.start_container("dialogue-hook-beforeswitch-oldrev")
    w.sleep(1)
    p = plan_for(_app(), w, store.load_memory("dialogue"))
    assert [a for a in p.actions if isinstance(a, RemoveHook)] == [
        RemoveHook(
            "blue", "hook container dialogue-hook-beforeswitch-oldrev is exited and its run is over",
            name="dialogue-hook-beforeswitch-oldrev", phase="beforeSwitch", revision="oldrev",
        )
    ]
    assert reconciler(w, tmp_path / "state").reconcile(_app()).converged
    assert "dialogue-hook-beforeswitch-oldrev" not in w.containers
    assert rev  # (the revision v2 would run its own hook for)


def test_after_switch_runs_once_after_the_switch_and_does_not_gate_it(tmp_path: Path) -> None:
    w, _store = _deployed_v1(tmp_path)
    w.hook_script = lambda argv, env: (1, ("notify failed",))
    v2 = _app("dialogue:2", "green", hooks={"afterSwitch": {"command": ["notify"]}})
    r = reconciler(w, tmp_path / "state").reconcile(v2)
    assert r.converged, r.error
    assert w.routed("dialogue") == ["127.0.0.1:18082"] and len(w.hook_runs) == 1
    assert reconciler(w, tmp_path / "state").reconcile(v2).converged and len(w.hook_runs) == 1


def test_a_hook_past_its_timeout_is_killed_removed_and_fails_the_deploy(tmp_path: Path) -> None:
    w, store = _deployed_v1(tmp_path)
    w.hook_seconds = 100.0
    v2 = _app("dialogue:2", "green", hooks={"beforeSwitch": {"command": ["migrate"], "timeoutSeconds": 5}})
    r = reconciler(w, tmp_path / "state").reconcile(v2)
    assert r.result == "degraded" and r.error is not None and "did not finish within 5s; killed" in r.error
    assert w.routed("dialogue") == ["127.0.0.1:18081"]
    assert not any(LABEL_HOOK in c.fact.labels for c in w.containers.values())
    run = next(iter(store.load_memory("dialogue").hooks.values()))
    assert (run.state, run.exit_code) == ("done", None)


def test_a_stop_during_the_hook_leaves_it_running_and_the_next_pass_collects_it(tmp_path: Path) -> None:
    w, store = _deployed_v1(tmp_path)
    w.hook_seconds = 10.0
    v2 = _app("dialogue:2", "green", hooks=HOOK)
    stop = {"now": False}
    rec = reconciler(w, tmp_path / "state")
    rec.should_stop = lambda: stop["now"]
    w.hook_script = lambda argv, env: (stop.update(now=True), (0, ("migrated",)))[1]  # SIGTERM once it started
    r = rec.reconcile(v2)
    assert r.result == "progressing" and w.routed("dialogue") == ["127.0.0.1:18081"]
    running = [c for c in w.containers.values() if LABEL_HOOK in c.fact.labels]
    assert [c.fact.state for c in running] == ["running"]
    assert [h.state for h in store.load_memory("dialogue").hooks.values()] == ["running"]
    stop["now"] = False
    assert reconciler(w, tmp_path / "state").reconcile(v2).converged
    assert len(w.hook_runs) == 1 and w.routed("dialogue") == ["127.0.0.1:18082"]
    assert [h.output for h in store.load_memory("dialogue").hooks.values()] == [("migrated",)]


def test_a_hook_container_removed_by_hand_mid_run_is_not_run_again_silently(tmp_path: Path) -> None:
    w, store = _deployed_v1(tmp_path)
    v2 = _app("dialogue:2", "green", hooks=HOOK)
    rev = plan_for(v2, w, Memory()).revisions["green"]
    store.record_hook("dialogue", HookRecord("beforeSwitch", rev, "running", w.now()))
    r = reconciler(w, tmp_path / "state").reconcile(v2)
    assert r.result == "degraded" and r.error is not None and "vanished before it finished; it may have run" in r.error
    assert w.hook_runs == [] and w.routed("dialogue") == ["127.0.0.1:18081"]
    assert store.load_memory("dialogue").hooks[hook_key("beforeSwitch", rev)].state == "lost"


def test_a_hook_left_running_for_a_revision_no_longer_wanted_is_collected_before_it_is_removed(tmp_path: Path) -> None:
    """Killed mid-hook, then the spec moved on: the old run is removed once it exits, its result kept, so going
    back to that revision finds it done (not run again, not lost)."""
    w, store = _deployed_v1(tmp_path)
    w.hook_seconds = 30.0
    v2 = _app("dialogue:2", "green", hooks=HOOK)
    rec = reconciler(w, tmp_path / "state")
    rec.should_stop = lambda: bool(w.hook_runs)  # stopped (like a kill) once the hook container started
    assert rec.reconcile(v2).result == "progressing"
    assert len(w.hook_runs) == 1
    other = _app("dialogue:2", "green", env={"X": "1"})  # the spec moves on (another revision, no hooks)
    assert reconciler(w, tmp_path / "state").reconcile(other).converged
    assert any(LABEL_HOOK in c.fact.labels for c in w.containers.values())  # still running: left alone
    w.clock += 31
    assert reconciler(w, tmp_path / "state").reconcile(other).converged
    assert not any(LABEL_HOOK in c.fact.labels for c in w.containers.values())
    runs = list(store.load_memory("dialogue").hooks.values())
    # Done with its exit code (going back to that revision does not run it again, nor calls it lost).
    assert [(h.phase, h.state, h.exit_code, h.succeeded) for h in runs] == [("beforeSwitch", "done", 0, True)]
    assert len(w.hook_runs) == 1


def test_a_retry_after_a_failed_hook_runs_it_anew_even_if_its_old_container_was_left(tmp_path: Path) -> None:
    w, store = _deployed_v1(tmp_path)
    w.hook_script = lambda argv, env: (2, ("failed",))
    v2 = _app("dialogue:2", "green", hooks=HOOK)
    w.crash_after = 3  # create green, create the hook container, start it; killed at its removal (result recorded)
    with contextlib.suppress(Crash):
        reconciler(w, tmp_path / "state").reconcile(v2)
    w.crash_after = None
    rev = plan_for(v2, w, Memory()).revisions["green"]
    assert store.load_memory("dialogue").hooks[hook_key("beforeSwitch", rev)].exit_code == 2
    assert any(LABEL_HOOK in c.fact.labels for c in w.containers.values())  # the finished container was left
    # No failure was remembered (the pass was killed), so the next pass retries at once: a new run, which passes.
    w.hook_script = lambda argv, env: (0, ("ok",))
    assert reconciler(w, tmp_path / "state").reconcile(v2).converged
    assert len(w.hook_runs) == 2 and w.routed("dialogue") == ["127.0.0.1:18082"]


def test_a_fix_to_the_failing_check_is_a_spec_change_tried_at_once(tmp_path: Path) -> None:
    """Checks and hooks are not part of the revision (they shape no container), yet changing them is a spec change:
    the failure was held against the gates it failed with, so the fixed gates run at once, without the backoff."""
    w, store = _deployed_v1(tmp_path)
    w.check_script = lambda argv, env: (4, ("smoke failed",))
    v2 = _app("dialogue:2", "green", checks=CHECKS)
    rec = reconciler(w, tmp_path / "state")
    assert rec.reconcile(v2).result == "degraded"
    assert verbs(v2, w, store.load_memory("dialogue")) == ["!BackingOff"]  # same gates: backing off
    fixed = _app("dialogue:2", "green", checks={"beforeSwitch": [{"command": ["smoke", "--fast", "--retries", "3"]}]})
    w.check_script = lambda argv, env: (0, ()) if "--retries" in argv else (4, ("smoke failed",))
    assert verbs(fixed, w, store.load_memory("dialogue"))[:2] == ["RunCheck:green", "SwitchRoute:green"]
    assert rec.reconcile(fixed).converged  # no clock moved: not waited out
    assert w.routed("dialogue") == ["127.0.0.1:18082"]


def test_a_failure_with_changed_gates_starts_its_count_anew(tmp_path: Path) -> None:
    w, store = _deployed_v1(tmp_path)
    w.check_script = lambda argv, env: (4, ("smoke failed",))
    rec = reconciler(w, tmp_path / "state")
    first = _app("dialogue:2", "green", checks=CHECKS)
    r = rec.reconcile(first)
    rev = r.plan.revisions["green"] if r.plan else ""
    other = _app("dialogue:2", "green", checks={"beforeSwitch": [{"command": ["smoke", "--slow"]}]})
    assert rec.reconcile(other).result == "degraded"  # changed gates: tried at once, and failed again
    failure = store.load_memory("dialogue").failures[rev]
    assert failure.count == 1 and failure.reason == "CheckFailed"
    assert failure.gates == gates_fingerprint(other) != gates_fingerprint(first)  # held against the new gates


def test_a_spec_change_mid_hook_waits_for_the_old_migration_and_kills_it_at_its_own_timeout(
    tmp_path: Path,
) -> None:
    """Issue 19 #6: one beforeSwitch hook of an app at a time. v2's hook still runs (its pass was stopped) when the
    spec moves to v3: v3's hook waits (HookRunning names v2's container) until v2's own timeout (20 s, its label,
    not v3's 30 s) passes; then v2's is stopped and removed first, recorded as killed, and v3's runs."""
    w, store = _deployed_v1(tmp_path)
    w.hook_seconds = 25.0
    v2 = _app(
        "dialogue:2", "green", hooks={"beforeSwitch": {"command": ["migrate", "v2"], "timeoutSeconds": 20}}
    )
    rec = reconciler(w, tmp_path / "state")
    rec.should_stop = lambda: bool(w.hook_runs)  # superseded once its hook started
    assert rec.reconcile(v2).result == "progressing" and len(w.hook_runs) == 1
    old = w.hook_runs[0]
    v3 = _app(
        "dialogue:2",
        "green",
        env={"RELEASE": "3"},
        hooks={"beforeSwitch": {"command": ["migrate", "v3"], "timeoutSeconds": 30}},
    )

    def hooks() -> list[str]:
        return sorted(c.fact.name for c in w.containers.values() if LABEL_HOOK in c.fact.labels)

    for _ in range(2):
        w.clock += 5
        r = reconciler(w, tmp_path / "state").reconcile(v3)
        assert r.result == "degraded" and r.plan is not None, r
        assert [b.reason for b in r.plan.blockers] == ["HookRunning"] and old in r.plan.blockers[0].message
        assert hooks() == [old] and len(w.hook_runs) == 1 and w.routed("dialogue") == ["127.0.0.1:18081"]
    w.clock += 11  # 21 s after v2's hook started: past its own timeout, still running (it would take 25 s)
    assert verbs(v3, w, store.load_memory("dialogue"))[:1] == ["RemoveHook:green"]
    assert reconciler(w, tmp_path / "state").reconcile(v3).converged
    assert len(w.hook_runs) == 2 and w.hook_runs[1] != old and hooks() == []
    assert w.routed("dialogue") == ["127.0.0.1:18082"]
    v2_rev = plan_for(v2, w, Memory()).revisions["green"]
    killed = store.load_memory("dialogue").hooks[hook_key("beforeSwitch", v2_rev)]
    assert (killed.state, killed.exit_code) == ("done", None) and "past its timeout (20s" in killed.output[
        -1
    ], killed
