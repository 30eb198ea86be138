"""What the syntax tree says on its own, before any name is resolved.

Scopes (what a block binds), the statements of a block without its nested functions, main
guards, assignment targets, parameters and decorators.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

_SCOPE_BREAKS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)


def own_nodes(stmts: list[ast.stmt]) -> Iterator[ast.AST]:
    """Every node of these statements, not descending into nested functions, classes or lambdas."""
    stack: list[ast.AST] = list(reversed(stmts))
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, _SCOPE_BREAKS):
            # decorators and defaults run in this scope; the body does not
            if not isinstance(node, ast.Lambda):
                stack.extend(reversed(node.decorator_list))
            continue
        stack.extend(reversed(list(ast.iter_child_nodes(node))))


def own_calls(stmts: list[ast.stmt]) -> list[ast.Call]:
    return [n for n in own_nodes(stmts) if isinstance(n, ast.Call)]


def is_main_guard(node: ast.stmt) -> bool:
    """`if __name__ == "__main__":` (either operand order)."""
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare) or len(node.test.ops) != 1:
        return False
    parts = [node.test.left, *node.test.comparators]
    names = {p.id for p in parts if isinstance(p, ast.Name)}
    consts = {p.value for p in parts if isinstance(p, ast.Constant)}
    return isinstance(node.test.ops[0], ast.Eq) and names == {"__name__"} and consts == {"__main__"}


def bindings(stmts: list[ast.stmt]) -> dict[str, list[ast.AST]]:
    """Names bound in a scope (defs, classes, imports, assignments), in source order."""
    found: dict[str, list[ast.AST]] = {}

    def add(name: str, node: ast.AST) -> None:
        found.setdefault(name, []).append(node)

    for node in own_nodes(stmts):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            add(node.name, node)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name != "*":
                    add(alias.asname or alias.name.split(".")[0], node)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in target_names(target):
                    add(name, node)
        elif isinstance(node, ast.NamedExpr) and isinstance(node.target, ast.Name):
            add(node.target.id, node)
    return found


def assigned_value(node: ast.Assign | ast.AnnAssign, name: str) -> ast.expr | None:
    """The expression assigned to `name` (element-wise for `a, b = x, y`)."""
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    for target in targets:
        if isinstance(target, ast.Name) and target.id == name:
            return node.value
        if isinstance(target, (ast.Tuple, ast.List)) and isinstance(node.value, (ast.Tuple, ast.List)):
            for element, value in zip(target.elts, node.value.elts):
                if isinstance(element, ast.Name) and element.id == name:
                    return value
    return None


def target_names(target: ast.AST) -> list[str]:
    """Names an assignment target binds (`x`, `a, *b`), not the bases of `x[k] = ...` or `x.a = ...`."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for e in target.elts for n in target_names(e)]
    if isinstance(target, ast.Starred):
        return target_names(target.value)
    return []


def param_names(node: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    a = node.args
    names = {p.arg for p in a.posonlyargs + a.args + a.kwonlyargs}
    names |= {p.arg for p in (a.vararg, a.kwarg) if p is not None}
    return names


def decorator_names(node: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    """Final names of a function's decorators (`functools.lru_cache(...)` -> "lru_cache")."""
    names = set()
    for d in node.decorator_list:
        target = d.func if isinstance(d, ast.Call) else d
        if isinstance(target, ast.Name):
            names.add(target.id)
        elif isinstance(target, ast.Attribute):
            names.add(target.attr)
    return names


def is_classmethod(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return "classmethod" in decorator_names(node)


def is_staticmethod(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return "staticmethod" in decorator_names(node)
