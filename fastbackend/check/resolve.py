"""Stage 2: what a name in the source refers to, without running anything.

Resolves names and attribute chains to project functions, classes, instances of project
classes, project modules, or external dotted names (`runpod.serverless.start`,
`subprocess.run`). Follows imports (absolute and relative, re-exports through `__init__`),
module and local assignments, `self` attributes set in methods, factories that return a nested
function, and parameters bound at a call site. Anything it cannot tell is None: rules treat an
unknown as "cannot tell", never as a violation.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Union

from fastbackend.check.source import Module, Project, resolve_from
from fastbackend.check.syntax import assigned_value, bindings, is_classmethod, is_staticmethod, own_nodes, param_names

MAX_DEPTH = 30  # resolution chains longer than this are given up on (cycles, deep re-exports)


@dataclass(frozen=True)
class Klass:
    module: Module
    node: ast.ClassDef
    qualname: str


@dataclass(frozen=True)
class Func:
    module: Module
    node: ast.FunctionDef | ast.AsyncFunctionDef
    qualname: str
    owner: Klass | None = None  # the class, for methods
    parent: Func | None = None  # the enclosing function, for nested defs
    bound: bool = False  # reached through an instance: the first parameter is already taken
    closure: tuple = ()  # the parent's parameters as bound by the call that created this function

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.module.name, self.qualname, self.node.lineno)

    @property
    def is_async(self) -> bool:
        return isinstance(self.node, ast.AsyncFunctionDef)

    @property
    def is_generator(self) -> bool:
        return any(isinstance(n, (ast.Yield, ast.YieldFrom)) for n in own_nodes(self.node.body))


@dataclass(frozen=True)
class ModRef:
    name: str
    module: Module | None  # None for a folder without __init__.py (namespace package)


@dataclass(frozen=True)
class External:
    dotted: str


@dataclass(frozen=True)
class Instance:
    klass: Klass


Entity = Union[Func, Klass, ModRef, External, Instance]


@dataclass(frozen=True)
class Ctx:
    """Where an expression is evaluated: its module, function, and parameters bound by a caller."""

    module: Module
    func: Func | None = None
    env: tuple[tuple[str, ast.expr, Ctx], ...] = ()


class Resolver:
    """Name resolution over a loaded Project; results are memoised per (expression, context)."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self._scopes: dict[int, dict[str, list[ast.AST]]] = {}
        self._memo: dict[tuple[int, Ctx], Entity | None] = {}
        self._active: set[tuple[int, Ctx]] = set()
        self._methods: dict[str, list[Func]] | None = None

    # -- scopes --------------------------------------------------------------
    def func_ctx(self, func: Func, env: tuple = ()) -> Ctx:
        return Ctx(func.module, func, env)

    def scope(self, owner: ast.AST, body: list[ast.stmt]) -> dict[str, list[ast.AST]]:
        key = id(owner)
        if key not in self._scopes:
            self._scopes[key] = bindings(body)
        return self._scopes[key]

    def functions(self, module: Module) -> Iterator[Func]:
        """Every function and method defined in a module (nested ones included)."""

        def visit(body: list[ast.stmt], prefix: str, owner: Klass | None, parent: Func | None) -> Iterator[Func]:
            for node in own_nodes(body):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    func = Func(module, node, prefix + node.name, owner, parent)
                    yield func
                    yield from visit(node.body, func.qualname + ".", None, func)
                elif isinstance(node, ast.ClassDef):
                    klass = Klass(module, node, prefix + node.name)
                    yield from visit(node.body, klass.qualname + ".", klass, parent)

        yield from visit(module.tree.body, "", None, None)

    def methods_named(self, name: str) -> list[Func]:
        """Project methods with this name (for calls on objects of unknown type)."""
        if self._methods is None:
            self._methods = {}
            for module in list(self.project.modules.values()):
                for func in self.functions(module):
                    if func.owner is not None:
                        self._methods.setdefault(func.node.name, []).append(dataclasses.replace(func, bound=True))
        return self._methods.get(name, [])

    # -- entry points --------------------------------------------------------
    def resolve(self, expr: ast.AST | None, ctx: Ctx, depth: int = 0) -> Entity | None:
        """What `expr` evaluates to, as far as the source tells; None when unknown."""
        if expr is None or depth > MAX_DEPTH:
            return None
        key = (id(expr), ctx)
        if key in self._memo:
            return self._memo[key]
        if key in self._active:
            return None
        self._active.add(key)
        try:
            result = self._resolve(expr, ctx, depth + 1)
        finally:
            self._active.discard(key)
        self._memo[key] = result
        return result

    def lookup(self, name: str, ctx: Ctx) -> Entity | None:
        """What a bare name refers to in a context."""
        return self._lookup(name, ctx, 0)

    def dotted(self, expr: ast.AST, ctx: Ctx) -> str | None:
        """The external dotted name of an expression (`subprocess.run`), or None."""
        entity = self.resolve(expr, ctx)
        return entity.dotted if isinstance(entity, External) else None

    def value_node(self, expr: ast.AST, ctx: Ctx, depth: int = 0) -> tuple[ast.AST, Ctx] | None:
        """The literal a name stands for (following assignments and bound parameters)."""
        if depth > MAX_DEPTH:
            return None
        if not isinstance(expr, ast.Name):
            return expr, ctx
        for name, arg, caller in ctx.env:
            if name == expr.id:
                return self.value_node(arg, caller, depth + 1)
        scopes = [(ctx.func.node, ctx.func.node.body, ctx)] if ctx.func else []
        scopes.append((ctx.module.tree, ctx.module.tree.body, Ctx(ctx.module)))
        for owner, body, scope_ctx in scopes:
            for node in reversed(self.scope(owner, body).get(expr.id, [])):
                if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                    value = assigned_value(node, expr.id)
                    if value is not None:
                        return self.value_node(value, scope_ctx, depth + 1)
        return None

    # -- resolution ----------------------------------------------------------
    def _resolve(self, expr: ast.AST, ctx: Ctx, depth: int) -> Entity | None:
        if isinstance(expr, ast.Name):
            return self._lookup(expr.id, ctx, depth)
        if isinstance(expr, ast.Attribute):
            return self.member(self.resolve(expr.value, ctx, depth), expr.attr, depth)
        if isinstance(expr, ast.Await):
            return self.resolve(expr.value, ctx, depth)
        if isinstance(expr, ast.IfExp):
            return self.resolve(expr.body, ctx, depth) or self.resolve(expr.orelse, ctx, depth)
        if isinstance(expr, ast.Call):
            return self._call_result(expr, ctx, depth)
        return None

    def _call_result(self, call: ast.Call, ctx: Ctx, depth: int) -> Entity | None:
        callee = self.resolve(call.func, ctx, depth)
        if isinstance(callee, Klass):
            return Instance(callee)
        if isinstance(callee, External) and callee.dotted == "functools.partial" and call.args:
            return self.resolve(call.args[0], ctx, depth)
        if isinstance(callee, Func):
            env = self.bind(callee, call, ctx)
            inner = self.func_ctx(callee, env)
            for node in own_nodes(callee.node.body):
                if isinstance(node, ast.Return) and node.value is not None:
                    result = self.resolve(node.value, inner, depth)
                    if result is not None:
                        return result
        return None

    def bind(self, func: Func, call: ast.Call, caller: Ctx) -> tuple[tuple[str, ast.expr, Ctx], ...]:
        """Parameters of `func` bound to the arguments of `call` (positional and keyword)."""
        args = func.node.args
        params = [a.arg for a in args.posonlyargs + args.args]
        if func.bound or (func.owner is not None and is_classmethod(func.node)):
            params = params[1:]
        env = [(name, value, caller) for name, value in zip(params, call.args) if not isinstance(value, ast.Starred)]
        names = set(params) | {a.arg for a in args.kwonlyargs}
        env += [(k.arg, k.value, caller) for k in call.keywords if k.arg in names]
        return tuple(env)

    def _lookup(self, name: str, ctx: Ctx, depth: int) -> Entity | None:
        func, env = ctx.func, ctx.env
        while True:
            for param, arg, caller in env:
                if param == name:
                    return self.resolve(arg, caller, depth)
            if func is None:
                break
            if func.owner is not None and func.node.args.args and name == func.node.args.args[0].arg:
                if is_classmethod(func.node):
                    return func.owner
                if not is_staticmethod(func.node):
                    return Instance(func.owner)
            bound = self.scope(func.node, func.node.body).get(name)
            if bound:
                return self._from_binding(name, bound, Ctx(func.module, func, env), depth)
            if name in param_names(func.node):
                return None
            func, env = func.parent, func.closure
        bound = self.scope(ctx.module.tree, ctx.module.tree.body).get(name)
        if bound:
            return self._from_binding(name, bound, Ctx(ctx.module), depth)
        if hasattr(builtins, name):
            return External(f"builtins.{name}")
        return None

    def _from_binding(self, name: str, nodes: list[ast.AST], ctx: Ctx, depth: int) -> Entity | None:
        # Later bindings win; an unknown one (a loop variable, an unresolvable call) hides none.
        for node in reversed(nodes):
            found = self._binding_entity(name, node, ctx, depth)
            if found is not None:
                return found
        return None

    def _binding_entity(self, name: str, node: ast.AST, ctx: Ctx, depth: int) -> Entity | None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            prefix = f"{ctx.func.qualname}." if ctx.func else ""
            return Func(ctx.module, node, prefix + node.name, None, ctx.func, closure=ctx.env if ctx.func else ())
        if isinstance(node, ast.ClassDef):
            prefix = f"{ctx.func.qualname}." if ctx.func else ""
            return Klass(ctx.module, node, prefix + node.name)
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname == name:
                    return self.module_entity(alias.name)
                if alias.asname is None and alias.name.split(".")[0] == name:
                    return self.module_entity(name)
            return None
        if isinstance(node, ast.ImportFrom):
            base = resolve_from(ctx.module, node)
            for alias in node.names:
                if (alias.asname or alias.name) == name and base:
                    return self.member(self.module_entity(base), alias.name, depth)
            return None
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            value = assigned_value(node, name)
            return self.resolve(value, ctx, depth) if value is not None else None
        if isinstance(node, ast.AnnAssign) and isinstance(node.annotation, (ast.Name, ast.Attribute)):
            # a dataclass field or a declared attribute: `host: ModelHost`
            declared = self.resolve(node.annotation, ctx, depth)
            return Instance(declared) if isinstance(declared, Klass) else None
        if isinstance(node, ast.NamedExpr):
            return self.resolve(node.value, ctx, depth)
        return None

    def module_entity(self, dotted: str) -> Entity:
        module = self.project.find(dotted)
        if module is not None:
            return ModRef(dotted, module)
        if self.project.is_local_package(dotted):
            return ModRef(dotted, None)
        return External(dotted)

    def member(self, base: Entity | None, attr: str, depth: int = 0) -> Entity | None:
        """`base.attr`: a module's global, a class's method, an instance's method or attribute."""
        if base is None or depth > MAX_DEPTH:
            return None
        if isinstance(base, External):
            return External(f"{base.dotted}.{attr}")
        if isinstance(base, ModRef):
            if base.module is not None:
                bound = self.scope(base.module.tree, base.module.tree.body).get(attr)
                if bound:
                    found = self._from_binding(attr, bound, Ctx(base.module), depth + 1)
                    if found is not None:
                        return found
            sub = f"{base.name}.{attr}"
            return self.module_entity(sub) if self.project.find(sub) or self.project.is_local_package(sub) else None
        if isinstance(base, (Klass, Instance)):
            klass = base if isinstance(base, Klass) else base.klass
            for cls in self._mro(klass, depth):
                bound = self.scope(cls.node, cls.node.body).get(attr)
                for node in reversed(bound or []):
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        func = Func(cls.module, node, f"{cls.qualname}.{node.name}", cls)
                        bound_call = isinstance(base, Instance) and not is_staticmethod(node)
                        return dataclasses.replace(func, bound=bound_call or is_classmethod(node))
                    found = self._binding_entity(attr, node, Ctx(cls.module), depth + 1)
                    if found is not None:
                        return found
                if isinstance(base, Instance):
                    found = self._instance_attribute(cls, attr, depth)
                    if found is not None:
                        return found
        return None

    def _instance_attribute(self, klass: Klass, attr: str, depth: int) -> Entity | None:
        for func in self.functions(klass.module):
            if func.owner != klass:
                continue
            for node in own_nodes(func.node.body):
                if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    for target in targets:
                        if (
                            isinstance(target, ast.Attribute)
                            and target.attr == attr
                            and isinstance(target.value, ast.Name)
                            and target.value.id in ("self", "cls")
                        ):
                            found = self.resolve(node.value, Ctx(func.module, func), depth + 1)
                            if found is not None:
                                return found
        return None

    def _mro(self, klass: Klass, depth: int) -> list[Klass]:
        order, queue = [], [klass]
        while queue and len(order) < 20:
            cls = queue.pop(0)
            if cls in order:
                continue
            order.append(cls)
            for base in cls.node.bases:
                found = self.resolve(base, Ctx(cls.module), depth + 1)
                if isinstance(found, Klass):
                    queue.append(found)
        return order
