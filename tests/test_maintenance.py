"""Maintenance (controller/app/rules/maintenance.py) on the in-memory world: spec.maintenance as desired state, a wrapped
migration (hooks.beforeSwitch.maintenance) in order, a failed hook ending it, a kill -9 at every mutation.

A public request is answered by the flag-aware site of nginx/: the maintenance page while `<flagFile>.maintenance`
exists, else the color the flag picks. `AnsweringWorld` records that answer after every file change and reload of
the controller, so a test sees the order in which a client would have seen them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from controller.app.rules.maintenance import DEFAULT_MESSAGE
from controller.kernel.errors import SpecError
from controller.spec.app import BlueGreenApp, parse_app
from controller.world.verification import parse_line
from tests.factories import make_app
from tests.fakes import CheckedWorld, crash_then_converge, reconciler
from tests.support.plans import plan_for

HOOK = {"beforeSwitch": {"command": ["migrate", "--up"], "timeoutSeconds": 30, "maintenance": True}}
BLUE, GREEN, MAINT = "127.0.0.1:18081", "127.0.0.1:18082", "maintenance"


@dataclass
class AnsweringWorld(CheckedWorld):
    answers: list[str] = field(default_factory=list)  # what a public request got, after each change (deduplicated)

    def _note(self) -> None:
        now = MAINT if self.maintenance_present("dialogue") else ",".join(self.routed("dialogue")) or "502"
        if not self.answers or self.answers[-1] != now:
            self.answers.append(now)

    def write_file(self, path: Path, content: str, mode: int = 0o644) -> None:
        super().write_file(path, content, mode)
        self._note()

    def remove_file(self, path: Path) -> None:
        super().remove_file(path)
        self._note()

    def reload(self) -> None:
        super().reload()
        self._note()


def _world(app: BlueGreenApp) -> AnsweringWorld:
    from controller.world.fake import FakeImage

    w = AnsweringWorld(images={"dialogue:1": FakeImage(), "dialogue:2": FakeImage()})
    w.include_paths.add(app.upstream_file)
    return w


def _condition(w: AnsweringWorld, tmp_path: Path, app: BlueGreenApp) -> tuple[bool, str]:
    st = reconciler(w, tmp_path / "state").status_only(app)
    c = next(c for c in st.conditions if c.type == "Maintenance")
    return c.status, c.reason


def _deployed_v1(tmp_path: Path, **spec: Any) -> AnsweringWorld:
    v1 = make_app(**spec)
    w = _world(v1)
    assert reconciler(w, tmp_path / "state").reconcile(v1).converged
    w.answers.clear()
    return w


def test_spec_maintenance_is_desired_state(tmp_path: Path) -> None:
    w = _deployed_v1(tmp_path)
    on = make_app(maintenance={"enabled": True, "message": "Back at 10:00 (UTC)"})
    flag = on.maintenance_flag_file
    assert flag == Path("/nginx/dialogue.green.maintenance")
    p = plan_for(on, w)
    assert [a.describe() for a in p.actions] == [
        f"SwitchMaintenance(blue): create {flag}: the site answers 503 with the maintenance page, confirm"
    ]
    assert reconciler(w, tmp_path / "state").reconcile(on).converged
    assert w.files[flag] == "Back at 10:00 (UTC)" and w.answers == [MAINT]
    assert _condition(w, tmp_path, on) == (True, "Enabled")
    w.mutations.clear()
    assert reconciler(w, tmp_path / "state").reconcile(on).converged and w.mutations == []  # converged: nothing touched
    # Another message: the file is rewritten (still in maintenance, no gap).
    other = make_app(maintenance={"enabled": True})
    assert reconciler(w, tmp_path / "state").reconcile(other).converged
    assert w.files[flag] == DEFAULT_MESSAGE and w.answers == [MAINT]
    # A hand-removed flag is state like any other: put back by the same loop.
    del w.files[flag]
    assert reconciler(w, tmp_path / "state").reconcile(other).converged and flag in w.files
    # Off (or the block gone): removed, blue serves again; nothing else touched.
    w.mutations.clear()
    assert reconciler(w, tmp_path / "state").reconcile(make_app(maintenance={"enabled": False})).converged
    assert flag not in w.files and w.answers[-1] == BLUE and w.mutations == [f"remove {flag}"]
    assert _condition(w, tmp_path, make_app(maintenance={"enabled": False})) == (False, "Off")
    assert w.violations == []


def test_a_wrapped_migration_answers_old_then_maintenance_then_new(tmp_path: Path) -> None:
    w = _deployed_v1(tmp_path)
    v2 = make_app(image="dialogue:2", activeColor="green", hooks=HOOK)
    seen: list[str] = []
    w.hook_seconds = 3.0

    def hook(argv: list[str], env: dict[str, str]) -> tuple[int, tuple[str, ...]]:
        seen.append(w.answers[-1])
        return 0, ("migrated",)

    w.hook_script = hook
    p = plan_for(v2, w)
    assert [a.verb for a in p.actions] == [
        "CreateContainer", "WaitHealthy", "SwitchMaintenance", "RunHook", "SwitchRoute", "SwitchMaintenance", "WriteMarker"
    ]  # fmt: skip
    assert [getattr(a, "on", None) for a in p.actions if a.verb == "SwitchMaintenance"] == [True, False]
    assert reconciler(w, tmp_path / "state").reconcile(v2).converged
    assert seen == [MAINT], "the hook ran in maintenance"
    assert w.answers == [MAINT, GREEN], "old color until maintenance, then only the new one"
    assert v2.maintenance_flag_file not in w.files and w.violations == []
    assert _condition(w, tmp_path, v2) == (False, "Off")
    # The next deploy with the same wrapped hook is wrapped again; a rollback (no hook to run) is not.
    w.answers.clear()
    back = make_app(image="dialogue:2", activeColor="blue", hooks=HOOK)
    assert reconciler(w, tmp_path / "state").reconcile(make_app(image="dialogue:2", activeColor="green", hooks=HOOK)).converged
    assert reconciler(w, tmp_path / "state").reconcile(back).converged
    assert MAINT in w.answers  # blue got dialogue:2: a new revision, its hook wrapped


@pytest.mark.parametrize("failing", ["hook", "check"])
def test_a_failed_hook_or_check_ends_maintenance_and_the_old_color_serves(tmp_path: Path, failing: str) -> None:
    w = _deployed_v1(tmp_path)
    checks = {"beforeSwitch": [{"command": ["smoke"]}]}
    v2 = make_app(image="dialogue:2", activeColor="green", hooks=HOOK, checks=checks)
    if failing == "hook":
        w.hook_script = lambda argv, env: (3, ("error: lock held",))
    else:
        w.check_script = lambda argv, env: (1, ("smoke: 1 failed",))
    r = reconciler(w, tmp_path / "state").reconcile(v2)
    degraded = next(c for c in r.status.conditions if c.type == "Degraded") if r.status else None
    assert degraded is not None and degraded.reason == ("HookFailed" if failing == "hook" else "CheckFailed"), r.error
    assert w.answers == [MAINT, BLUE], "maintenance ended at once, the old color serves"
    assert v2.maintenance_flag_file not in w.files
    assert any(d.startswith("SwitchMaintenance(blue): remove") for d in r.actions_done), r.actions_done
    assert _condition(w, tmp_path, v2) == (False, "Off")
    # Backing off: no maintenance meanwhile.
    w.answers.clear()
    assert reconciler(w, tmp_path / "state").reconcile(v2).result == "degraded"
    assert w.answers == [] and w.violations == []


@pytest.mark.parametrize("crash_after", range(0, 12))
def test_a_kill_9_at_any_mutation_is_finished_by_the_next_pass(tmp_path: Path, crash_after: int) -> None:
    w = _deployed_v1(tmp_path)
    w.hook_seconds = 5.0
    v2 = make_app(image="dialogue:2", activeColor="green", hooks=HOOK)
    crash_then_converge(w, tmp_path / "state", v2, crash_after + 1)  # +1: the green container's own create goes through
    assert w.routed("dialogue") == [GREEN] and v2.maintenance_flag_file not in w.files
    assert len(w.hook_runs) == 1, w.mutations
    # Whatever the kill: old answers, then maintenance, then only new ones (never old after maintenance began).
    assert w.answers == [MAINT, GREEN], (crash_after, w.answers, w.mutations)
    assert w.violations == []


def test_a_leftover_maintenance_is_turned_off_even_when_a_dependency_holds_the_deploy(tmp_path: Path) -> None:
    w = _deployed_v1(tmp_path)
    v2 = make_app(image="dialogue:2", activeColor="green", hooks=HOOK, dependsOn=["redis"])
    w.files[v2.maintenance_flag_file] = DEFAULT_MESSAGE  # a killed pass's, its deploy no longer wanted now
    p = plan_for(v2, w, not_ready={"redis": "connection refused"})
    assert [(a.verb, getattr(a, "on", None)) for a in p.actions] == [("SwitchMaintenance", False)]
    assert [b.reason for b in p.blockers] == ["DependencyNotReady"]


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"maintenance": {"enabled": True, "message": "<b>soon</b>"}}, "goes into the page"),
        ({"maintenance": {"enabled": True, "message": 'say "hi"'}}, "goes into the page"),
        ({"maintenance": {"enabled": True, "message": "two\nlines"}}, "goes into the page"),
        ({"maintenance": {"enabled": "yes"}}, "valid boolean"),
        ({"maintenance": {"enabled": True, "retryAfterSeconds": 60}}, "retryAfterSeconds"),
        ({"maintenance": {"enabled": True}, "nginx": {"switch": "reload"}}, "needs nginx.switch: flag"),
        ({"hooks": {"beforeSwitch": {"command": ["m"], "maintenance": True}}, "nginx": {"switch": "reload"}}, "needs nginx.switch: flag"),
        ({"hooks": {"afterSwitch": {"command": ["m"], "maintenance": True}}}, "maintenance"),
    ],
)
def test_spec_refuses_what_the_site_cannot_do(spec: dict[str, Any], error: str) -> None:
    import yaml

    doc = {"apiVersion": "bluegreen/v1", "kind": "BlueGreenApp", "metadata": {"name": "dialogue"},
           "spec": {"image": "dialogue:1", "activeColor": "blue", **spec}}  # fmt: skip
    with pytest.raises(SpecError, match=error):
        parse_app(yaml.safe_dump(doc), "spec.yaml")


def test_verification_never_counts_the_sites_maintenance_answers() -> None:
    line = b'{"msec":"1.0","status":"503","upstream_addr":"","upstream_status":"","upstream_response_time":"","maintenance":"1"}'
    assert parse_line(line) is None
    proxied = b'{"msec":"1.0","status":"503","upstream_addr":"127.0.0.1:18082","upstream_status":"503","upstream_response_time":"0.001","maintenance":""}'
    entry = parse_line(proxied)
    assert entry is not None and entry.tries == (("127.0.0.1:18082", 503, 1.0),)  # the app's own 503 counts
