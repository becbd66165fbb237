"""One pass, one plan (issue 18 item 1): `gather` + `decide` are the only way a plan is made.

Read from the source (ast: an import inside a function counts too) of controller/ and tests/:
- only controller/app/decide.py (and the rules themselves) import controller/app/rules/: the rules compose in one place;
- only controller/app/decide.py builds a `Plan` in controller/; the planner has no `plan` function, nothing imports one;
- only controller/app/gather.py calls `observe.observe`, and only observe.py derives the serving color
  (`routing.serving_color`): every other module reads `Observed.serving`;
- a test module unit-tests at most one rule (imports from one controller/app/rules/ module) and never observes by
  itself: a hand-built pipeline needs at least two stages.
And at run time, with a state dir that counts: a pass reads the memory once.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import controller.app.plan
from controller.store.documents import FailoverState
from controller.store.state import StateStore
from controller.world.facts import Memory
from tests.factories import make_app
from tests.fakes import CheckedWorld, reconciler, world_for

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Module:
    path: str  # relative to the repository, e.g. controller/app/decide.py
    imports: list[tuple[str, str]] = field(default_factory=list)  # (module, name); name "" for `import module`
    calls: set[str] = field(default_factory=set)  # names called directly: f(...)


def modules(*roots: str) -> Iterator[Module]:
    for root in roots:
        for path in sorted((ROOT / root).rglob("*.py")):
            m = Module(str(path.relative_to(ROOT)))
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom) and node.module:
                    m.imports += [(node.module, a.name) for a in node.names]
                elif isinstance(node, ast.Import):
                    m.imports += [(a.name, "") for a in node.names]
                elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                    m.calls.add(node.func.id)
            yield m


def rule_modules(m: Module) -> set[str]:
    return {
        mod if mod != "controller.app.rules" else f"controller.app.rules.{name}"
        for mod, name in m.imports
        if mod == "controller.app.rules" or mod.startswith("controller.app.rules.")
    }


def test_only_decide_composes_the_rules() -> None:
    found = {m.path for m in modules("controller", "bench") if rule_modules(m)}
    rules = {p for p in found if p.startswith("controller/app/rules/")}
    assert found - rules == {"controller/app/decide.py"}, found - rules


def test_only_decide_makes_a_plan() -> None:
    assert not hasattr(controller.app.plan, "plan")
    for m in modules("controller", "tests", "bench"):
        assert ("controller.app.plan", "plan") not in m.imports, m.path
        if m.path.startswith("controller/"):
            assert "Plan" not in m.calls or m.path == "controller/app/decide.py", m.path


def test_only_gather_observes_and_only_observation_derives_the_serving_color() -> None:
    observers, serving = set(), set()
    for m in modules("controller", "tests", "bench"):
        if ("controller.app.observe", "observe") in m.imports:
            observers.add(m.path)
        if ("controller.app.routing", "serving_color") in m.imports:
            serving.add(m.path)
    assert observers == {"controller/app/gather.py"}
    assert serving == {"controller/app/observe.py"}  # Observed.serving, computed once


def test_a_test_unit_tests_one_rule_at_most() -> None:
    for m in modules("tests"):
        assert len(rule_modules(m)) <= 1, (m.path, rule_modules(m))


# --------------------------------------------------------------------------------------------- at run time


class CountingStore(StateStore):
    """A state dir that counts the reads of the memory (and of failover.json: one per gathering, so one per pass)."""

    memory_reads = 0
    failover_reads = 0

    def load_memory(self, app: str) -> Memory:
        self.memory_reads += 1
        return super().load_memory(app)

    def load_failover(self, app: str) -> FailoverState:
        self.failover_reads += 1
        return super().load_failover(app)


HOOKS = {"beforeSwitch": {"command": ["migrate"]}, "afterSwitch": {"command": ["notify"]}}


def test_a_pass_reads_the_memory_once(tmp_path: Path) -> None:
    v1 = make_app(hooks=HOOKS)
    w: CheckedWorld = world_for(v1)
    rec = reconciler(w, tmp_path / "state")
    store = rec.store = rec.verifier.store = CountingStore(tmp_path / "state")
    # A deploy with hooks (whose runs the executor reads back) and a status written before and after each pass.
    assert rec.reconcile(v1).result == "converged"
    assert store.failover_reads >= 2  # passes: the deploy, then the one that finds nothing left to do
    assert store.memory_reads == store.failover_reads
    v2 = make_app(image="dialogue:2", activeColor="green", hooks=HOOKS)
    assert rec.reconcile(v2).result == "converged" and w.violations == []
    assert store.memory_reads == store.failover_reads
    # --plan and --status: one gathering, one read.
    before = store.memory_reads
    rec.plan_only(v2)
    rec.status_only(v2)
    assert store.memory_reads - before == 2
