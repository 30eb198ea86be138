"""Stage 3: what runs from where, and what comes back.

`reach` walks the call graph from a function (or from module-level code): `precise` follows
only calls whose target the resolver knows; `may` also follows calls on objects of unknown type
to project methods of that name, and functions passed as values (callbacks). Rules that must
not fire falsely (heavy setup in the handler) use precise; rules that look for something
that must be present (a payload check, cleanup) use may.

`return_leaves` lists what each return path of a function can produce, through names and
calls, as leaves: a dict literal, None, another value, or unknown.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from fastbackend.check.resolve import Ctx, External, Func, Instance, Klass, Resolver
from fastbackend.check.source import Module
from fastbackend.check.syntax import assigned_value, own_calls, own_nodes, target_names

MAX_FUNCTIONS = 400
MAX_RETURN_DEPTH = 6
_MAX_NAME_MATCHES = 4
# Method names too common to guess a target from (dict.get, list.append, file.read...).
_COMMON_METHODS = frozenset(
    "get set add update pop append extend insert remove clear copy keys values items join split strip "
    "format encode decode read write close open run start stop send recv put result wait lower upper "
    "replace startswith endswith count index sort reverse setdefault to save load info debug warning "
    "error exception critical log".split()
)


@dataclass(frozen=True)
class Step:
    """How a function was reached: from `via` (None: the starting code) at call site `call`."""

    func: Func
    via: Step | None
    call: ast.AST | None
    module: Module  # the module the call site is in
    offloaded: bool = False  # run in a thread or executor (`to_thread`, `run_in_executor`), not inline

    def chain(self) -> list[Step]:
        steps, step = [], self
        while step is not None:
            steps.append(step)
            step = step.via
        return list(reversed(steps))


@dataclass(frozen=True)
class Unit:
    """Code to start a walk from: a function, or a list of module-level statements."""

    stmts: tuple[ast.stmt, ...]
    ctx: Ctx

    @classmethod
    def of(cls, func: Func) -> Unit:
        return cls(tuple(func.node.body), Ctx(func.module, func))


# Calls that run a function passed as an argument (in a thread or an executor): name -> its position.
# The first three give back that function's result when awaited; `submit` gives a future.
_OFFLOAD = {"run_in_executor": 1, "to_thread": 0, "run_sync": 0, "submit": 0}


def offloaded(resolver: Resolver, call: ast.Call, ctx: Ctx, *, result: bool = False) -> Func | None:
    """The project function `loop.run_in_executor(pool, fn, ...)`, `asyncio.to_thread(fn, ...)` and
    the like will run (with `result`: only where the call gives back its result)."""
    name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
    index = _OFFLOAD.get(name)
    if index is None or len(call.args) <= index or (result and name == "submit"):
        return None
    if isinstance(resolver.resolve(call.func, ctx), Func):
        return None  # a project function of that name: followed as itself
    target = resolver.resolve(call.args[index], ctx)
    return target if isinstance(target, Func) else None


def call_targets(resolver: Resolver, call: ast.Call, ctx: Ctx, may: bool) -> list[Func]:
    """The project functions a call may run (a class call runs its __init__; an executor call, its function)."""
    target = resolver.resolve(call.func, ctx)
    if isinstance(target, Func):
        return [target]
    if isinstance(target, Klass):
        inits = [resolver.member(Instance(target), name) for name in ("__init__", "__post_init__")]
        return [f for f in inits if isinstance(f, Func)]
    worker = offloaded(resolver, call, ctx)
    if worker is not None:
        return [worker]
    if target is None and may and isinstance(call.func, ast.Attribute) and call.func.attr not in _COMMON_METHODS:
        found = resolver.methods_named(call.func.attr)
        return found if len(found) <= _MAX_NAME_MATCHES else []
    return []


def _references(resolver: Resolver, stmts: tuple[ast.stmt, ...], ctx: Ctx) -> list[tuple[ast.AST, Func]]:
    """Project functions used as values (passed as callbacks, stored in tables)."""
    called = {id(c.func) for c in own_calls(list(stmts))}
    found = []
    for node in own_nodes(list(stmts)):
        if isinstance(node, (ast.Name, ast.Attribute)) and isinstance(node.ctx, ast.Load) and id(node) not in called:
            target = resolver.resolve(node, ctx)
            if isinstance(target, Func):
                found.append((node, target))
    return found


def reach(resolver: Resolver, starts: list[Unit], *, may: bool) -> dict[tuple, Step]:
    """Every project function reachable from the start units (bounded), with how it was reached."""
    steps: dict[tuple, Step] = {}
    queue: list[tuple[Unit, Step | None]] = [(u, None) for u in starts]
    while queue and len(steps) < MAX_FUNCTIONS:
        unit, via = queue.pop(0)
        edges: list[tuple[ast.AST, Func, bool]] = []
        for call in own_calls(list(unit.stmts)):
            thread = offloaded(resolver, call, unit.ctx)
            edges += [(call, f, f == thread) for f in call_targets(resolver, call, unit.ctx, may)]
        if may:
            edges += [(site, f, False) for site, f in _references(resolver, unit.stmts, unit.ctx)]
        for site, func, thread in edges:
            if func.key in steps:
                continue
            step = Step(func, via, site, unit.ctx.module, thread)
            steps[func.key] = step
            queue.append((Unit.of(func), step))
    return steps


def nested_functions(func: Func, levels: int) -> list[Func]:
    """Functions defined inside `func` (and inside those, `levels` deep)."""
    found = []
    for node in own_nodes(func.node.body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inner = Func(func.module, node, f"{func.qualname}.{node.name}", None, func)
            found.append(inner)
            if levels > 1:
                found += nested_functions(inner, levels - 1)
    return found


def decorator_wrappers(resolver: Resolver, func: Func) -> list[Func]:
    """The wrappers that project decorators on `func` define: they run around every call of it."""
    ctx = Ctx(func.module, func.parent, func.closure) if func.parent else Ctx(func.module)
    found: list[Func] = []
    for decorator in func.node.decorator_list:
        target = resolver.resolve(decorator.func if isinstance(decorator, ast.Call) else decorator, ctx)
        if isinstance(target, Func):
            found += nested_functions(target, levels=2)
    return found


def walk_units(resolver: Resolver, start: Func, *, may: bool) -> list[tuple[Func, Step | None]]:
    """The start function, its decorators' wrappers, and everything reachable from them."""
    starts = [start, *decorator_wrappers(resolver, start)]
    steps = reach(resolver, [Unit.of(f) for f in starts], may=may)
    return [(f, None) for f in starts] + [
        (s.func, s) for s in steps.values() if s.func.key not in {f.key for f in starts}
    ]


# -- control flow -------------------------------------------------------------
def _exits(call: ast.AST) -> bool:
    if not isinstance(call, ast.Expr) or not isinstance(call.value, ast.Call):
        return False
    func = call.value.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return name in ("exit", "_exit", "abort")


def terminates(stmts: list[ast.stmt]) -> bool:
    """True when control cannot fall off the end of these statements."""
    for stmt in stmts:
        if isinstance(stmt, (ast.Return, ast.Raise)) or _exits(stmt):
            return True
        if isinstance(stmt, ast.If) and stmt.orelse and terminates(stmt.body) and terminates(stmt.orelse):
            return True
        if isinstance(stmt, (ast.With, ast.AsyncWith)) and terminates(stmt.body):
            return True
        if isinstance(stmt, ast.While) and isinstance(stmt.test, ast.Constant) and stmt.test.value:
            if not any(isinstance(n, ast.Break) for n in own_nodes(stmt.body)):
                return True
        if isinstance(stmt, (ast.Try, getattr(ast, "TryStar", ast.Try))):
            if stmt.finalbody and terminates(stmt.finalbody):
                return True
            main = list(stmt.body) + list(stmt.orelse)
            if terminates(main) and all(terminates(h.body) for h in stmt.handlers):
                return True
        if isinstance(stmt, ast.Match) and any(
            isinstance(c.pattern, ast.MatchAs) and c.pattern.pattern is None for c in stmt.cases
        ):
            if all(terminates(c.body) for c in stmt.cases):
                return True
    return False


BROAD = frozenset({"Exception", "BaseException"})


def is_broad(handler: ast.ExceptHandler) -> bool:
    """`except:`, `except Exception`, `except BaseException` (alone or in a tuple)."""
    if handler.type is None:
        return True
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(
        isinstance(t, ast.Name) and t.id in BROAD or isinstance(t, ast.Attribute) and t.attr in BROAD for t in types
    )


def broad_tries(stmts: list[ast.stmt]) -> list[ast.Try]:
    return [n for n in own_nodes(stmts) if isinstance(n, ast.Try) and any(is_broad(h) for h in n.handlers)]


def reraises(handler: ast.ExceptHandler) -> bool:
    return any(isinstance(n, ast.Raise) for n in own_nodes(handler.body))


def inside(node: ast.AST, stmts: list[ast.stmt]) -> bool:
    """True when `node` lies within these statements (by identity)."""
    return any(n is node for n in own_nodes(stmts))


# -- returns --------------------------------------------------------------------
@dataclass(frozen=True)
class Leaf:
    """One value a return path can produce."""

    kind: str  # dict | none | other | unknown
    node: ast.AST
    module: Module
    func: Func
    what: str  # for "other": what it is, e.g. "a str"

    @property
    def line(self) -> int:
        return getattr(self.node, "lineno", self.func.node.lineno)


_OTHER_BUILTINS = {
    "str": "a str",
    "repr": "a str",
    "int": "an int",
    "float": "a float",
    "bool": "a bool",
    "list": "a list",
    "tuple": "a tuple",
    "sorted": "a list",
    "len": "an int",
    "bytes": "bytes",
    "set": "a set",
}


class Returns:
    """Return-value analysis with a memo per function."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self._memo: dict[tuple, list[Leaf]] = {}

    def leaves(self, func: Func, depth: int = 0) -> list[Leaf]:
        """Every leaf value `func`'s return paths can produce (falling off the end is a None leaf)."""
        if func.key in self._memo:
            return self._memo[func.key]
        if depth > MAX_RETURN_DEPTH:
            return [Leaf("unknown", func.node, func.module, func, "")]
        self._memo[func.key] = [Leaf("unknown", func.node, func.module, func, "")]  # cycle guard
        ctx = Ctx(func.module, func)
        found: list[Leaf] = []
        for node in own_nodes(func.node.body):
            if isinstance(node, ast.Return):
                if node.value is None:
                    found.append(Leaf("none", node, func.module, func, "None"))
                else:
                    found += self.value_leaves(node.value, ctx, func, depth)
        if not terminates(func.node.body):
            found.append(Leaf("none", func.node, func.module, func, "None (falls off the end)"))
        self._memo[func.key] = found
        return found

    def value_leaves(self, expr: ast.AST, ctx: Ctx, func: Func, depth: int) -> list[Leaf]:
        m = ctx.module
        if isinstance(expr, (ast.Dict, ast.DictComp)):
            return [Leaf("dict", expr, m, func, "a dict")]
        if isinstance(expr, ast.Constant):
            if expr.value is None:
                return [Leaf("none", expr, m, func, "None")]
            return [Leaf("other", expr, m, func, f"a {type(expr.value).__name__}")]
        if isinstance(expr, (ast.JoinedStr, ast.List, ast.Tuple, ast.Set, ast.ListComp, ast.SetComp, ast.GeneratorExp)):
            what = {
                ast.JoinedStr: "a str",
                ast.List: "a list",
                ast.Tuple: "a tuple",
                ast.Set: "a set",
                ast.ListComp: "a list",
                ast.SetComp: "a set",
                ast.GeneratorExp: "a generator",
            }[type(expr)]
            return [Leaf("other", expr, m, func, what)]
        if isinstance(expr, ast.IfExp):
            return self.value_leaves(expr.body, ctx, func, depth) + self.value_leaves(expr.orelse, ctx, func, depth)
        if isinstance(expr, ast.Await):
            return self.value_leaves(expr.value, ctx, func, depth)
        if isinstance(expr, ast.Name):
            return self._name_leaves(expr, ctx, func, depth)
        if isinstance(expr, ast.Call):
            return self._call_leaves(expr, ctx, func, depth)
        return [Leaf("unknown", expr, m, func, "")]

    def _name_leaves(self, expr: ast.Name, ctx: Ctx, func: Func, depth: int) -> list[Leaf]:
        values = []
        for node in own_nodes(func.node.body):
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                value = assigned_value(node, expr.id)
                if value is not None:
                    values.append(value)
                elif _binds(node, expr.id):
                    return [Leaf("unknown", expr, ctx.module, func, "")]
            elif isinstance(node, (ast.For, ast.AsyncFor, ast.With, ast.AsyncWith, ast.NamedExpr)) and _binds(
                node, expr.id
            ):
                return [Leaf("unknown", expr, ctx.module, func, "")]
        if not values:
            return [Leaf("unknown", expr, ctx.module, func, "")]
        leaves: list[Leaf] = []
        for value in values:
            leaves += self.value_leaves(value, ctx, func, depth)
        return leaves

    def _call_leaves(self, call: ast.Call, ctx: Ctx, func: Func, depth: int) -> list[Leaf]:
        m = ctx.module
        target = self.resolver.resolve(call.func, ctx)
        if not isinstance(target, Func):
            target = offloaded(self.resolver, call, ctx, result=True) or target
        if isinstance(target, Func):
            return self.leaves(target, depth + 1)
        if isinstance(target, Klass):
            return [Leaf("other", call, m, func, f"a {target.node.name} object")]
        if isinstance(target, External) and target.dotted.startswith("builtins."):
            name = target.dotted.split(".", 1)[1]
            if name == "dict":
                return [Leaf("dict", call, m, func, "a dict")]
            if name in _OTHER_BUILTINS:
                return [Leaf("other", call, m, func, _OTHER_BUILTINS[name])]
        return [Leaf("unknown", call, m, func, "")]


def _binds(node: ast.AST, name: str) -> bool:
    targets: list[ast.AST] = []
    if isinstance(node, ast.Assign):
        targets = list(node.targets)
    elif isinstance(node, (ast.AnnAssign, ast.NamedExpr, ast.For, ast.AsyncFor)):
        targets = [node.target]
    elif isinstance(node, (ast.With, ast.AsyncWith)):
        targets = [i.optional_vars for i in node.items if i.optional_vars is not None]
    return any(name in target_names(t) for t in targets)


def dict_keys(node: ast.AST) -> tuple[set[str], bool]:
    """The constant keys of a dict literal or `dict(...)` call, and whether it has `**` entries."""
    if isinstance(node, ast.Dict):
        keys = {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
        return keys, any(k is None for k in node.keys) or any(not isinstance(k, ast.Constant) for k in node.keys)
    if isinstance(node, ast.Call):
        return {k.arg for k in node.keywords if k.arg}, any(k.arg is None for k in node.keywords) or bool(node.args)
    return set(), True


def dict_value(node: ast.AST, key: str) -> ast.AST | None:
    if isinstance(node, ast.Dict):
        for k, v in zip(node.keys, node.values):
            if isinstance(k, ast.Constant) and k.value == key:
                return v
    if isinstance(node, ast.Call):
        for k in node.keywords:
            if k.arg == key:
                return k.value
    return None
