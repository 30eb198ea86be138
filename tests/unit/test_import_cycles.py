"""No import cycles among the project's modules, deferred (function-level) imports included.

A cycle hidden behind an import inside a function still ties two modules together: neither can
be read, tested or moved without the other. The graph is built from the source with `ast`, so
every `import` counts wherever it sits (module level, function body, and `if TYPE_CHECKING:`:
an annotation that names a module above this one is a reader's dependency on it, the way the
ops once took the Worker that dispatched to them).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("worker", "exported", "fastbackend", "benchmarks")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _targets(node: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The project modules an import statement names (`from pkg import mod` names pkg.mod)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
            stem = ".".join(base + ([node.module] if node.module else []))
        else:
            stem = node.module or ""
        # `from pkg import mod` is an edge to pkg.mod; `from pkg import name` one to pkg itself.
        names = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in known else stem for a in node.names]
    else:
        return set()
    found = set()
    for name in names:
        # `import a.b.c` also runs a/__init__ and a/b/__init__: the deepest known module is the edge.
        parts = name.split(".")
        for end in range(len(parts), 0, -1):
            if ".".join(parts[:end]) in known:
                found.add(".".join(parts[:end]))
                break
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        edges = set()
        for node in ast.walk(tree):
            edges |= _targets(node, name, path.name == "__init__.py", known)
        graph[name] = edges - {name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_the_graph_sees_deferred_imports():
    graph = import_graph()
    # fastbackend.cli imports its commands inside functions (cheap start-up): those edges must count.
    assert "fastbackend.export" in graph["fastbackend.cli"]


def test_a_cycle_through_a_deferred_import_is_found():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_among_project_modules():
    cycles = find_cycles(import_graph())
    assert cycles == [], "import cycles (break them by moving the shared part down a layer): " + "; ".join(
        " <-> ".join(c) for c in cycles
    )


def test_type_checking_imports_are_edges():
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from a import b\n"
    nodes = [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom)]
    assert {t for node in nodes for t in _targets(node, "c", False, {"a", "c"})} == {"a"}
    assert find_cycles({"a": {"c"}, "c": {"a"}}) == [["a", "c"]]
