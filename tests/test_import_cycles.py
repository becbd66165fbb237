"""No import cycle among the controller's modules, lazy imports included (issue 18).

The layers contract (pyproject [tool.importlinter]) lets the modules of one layer import each other, and a cycle
closed by an import inside a function (or at the end of a file) still runs at import time in one order only. This
test reads the source of controller/ (every `import` and `from ... import`, at any depth: inside functions, classes
and `try` blocks; `if TYPE_CHECKING:` blocks skipped, they load nothing) and fails on any cycle of the graph.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "controller"

def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / PACKAGE).rglob("*.py"))}


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement at any depth, except those under `if TYPE_CHECKING:` (their `else:` still counts)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def imported(name: str, source: str, known: set[str], is_package: bool = False) -> set[str]:
    """The controller modules `name` imports (a package's `from p import m` names the module p.m when it is one)."""
    out: set[str] = set()
    for node in _imports(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            if node.level:  # relative: from the module's package, `level` steps up
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            targets = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in known else prefix for a in node.names]
        for t in targets:
            while t and t not in known:  # `import controller.drivers.host` -> that module; a name inside one -> the module
                t = t.rpartition(".")[0]
            if t and t != name and (t == PACKAGE or t.startswith(PACKAGE + ".")):
                out.add(t)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imported(name, path.read_text(), known, path.name == "__init__.py") for name, path in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[frozenset[str]] = []
    counter = 0
    for root in sorted(g):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(g[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(g.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.add(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def test_the_graph_sees_lazy_and_relative_imports_and_skips_type_checking_ones() -> None:
    g = graph()
    assert "controller.drivers.host" in g["controller.runtime.build"]  # imported inside build()
    assert "controller.runtime.watch" in g["controller.cli.main"]  # imported inside _watch()
    known = {"controller", "controller.a", "controller.b", "controller.p", "controller.p.m", "controller.p.n"}
    text = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from controller.a import A\n"
        "def f():\n    try:\n        from controller import b\n    except ImportError:\n        pass\n"
        "from . import n\nimport controller.p.m.sub\n"
    )
    assert imported("controller.p.x", text, known) == {"controller.b", "controller.p.n", "controller.p.m"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset({"a", "b", "c"})]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_at_all() -> None:
    found = [sorted(c) for c in cycles(graph())]
    assert found == [], f"import cycles among controller modules (lazy imports included): {found}"
