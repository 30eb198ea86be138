"""Stage 4: how the worker starts, and which function is the handler.

Follows the code under `if __name__ == "__main__":` (and the code that runs on import) through
project functions, binding parameters at each call, to every `runpod.serverless.start(...)`;
the handler is the `"handler"` entry of the config passed there. Without a start call, a
module-level `handler` is taken.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from fastbackend.check.flow import dict_keys, dict_value
from fastbackend.check.resolve import Ctx, External, Func, Instance, Klass, Resolver
from fastbackend.check.syntax import is_main_guard, own_calls

START = "runpod.serverless.start"
MAX_CALL_DEPTH = 8


@dataclass(frozen=True)
class StartCall:
    call: ast.Call
    ctx: Ctx
    guarded: bool  # reached from the main guard (False: runs on import)
    imported: bool  # `runpod` resolves to the package (False: used without an import)
    chain: tuple[str, ...]  # the functions called on the way, for messages

    @property
    def line(self) -> int:
        return self.call.lineno


@dataclass(frozen=True)
class Entry:
    handlers: tuple[Func, ...]  # more than one when start() picks at run time (`a if cond else b`)
    found_by: str  # "start config" | "module function" | ""
    starts: tuple[StartCall, ...]
    unreached: tuple[tuple[Func, ast.Call], ...]  # start() calls nothing runs
    guards: tuple[ast.If, ...]
    config: ast.AST | None  # the dict passed to start()
    config_keys: frozenset[str]
    config_open: bool  # the config has `**` entries or is not a literal: keys cannot all be known

    @property
    def handler(self) -> Func | None:
        return self.handlers[0] if self.handlers else None

    @property
    def guarded_start(self) -> StartCall | None:
        return next((s for s in self.starts if s.guarded), None)


def _is_start(resolver: Resolver, call: ast.Call, ctx: Ctx) -> tuple[bool, bool]:
    """(is a start call, runpod is imported)."""
    target = resolver.resolve(call.func, ctx)
    if isinstance(target, External):
        return target.dotted == START, True
    chain, node = [], call.func
    while isinstance(node, ast.Attribute):
        chain.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name) and target is None:
        dotted = ".".join([node.id, *reversed(chain)])
        return dotted == START, False
    return False, True


def main_guards(resolver: Resolver) -> list[ast.If]:
    return [n for n in resolver.project.handler.tree.body if is_main_guard(n)]


def find_starts(resolver: Resolver) -> list[StartCall]:
    """Start calls reached from the main guard (guarded) and from import-time code (not guarded)."""
    module = resolver.project.handler
    guards = main_guards(resolver)
    guarded_body = [s for g in guards for s in g.body]
    on_import = [s for s in module.tree.body if not is_main_guard(s)]
    found: list[StartCall] = []
    seen: set[tuple] = set()

    def visit(stmts: list[ast.stmt], ctx: Ctx, guarded: bool, chain: tuple[str, ...], depth: int) -> None:
        for call in own_calls(stmts):
            is_start, imported = _is_start(resolver, call, ctx)
            if is_start:
                found.append(StartCall(call, ctx, guarded, imported, chain))
                continue
            if depth >= MAX_CALL_DEPTH:
                continue
            target = resolver.resolve(call.func, ctx)
            if isinstance(target, Klass):
                target = resolver.member(Instance(target), "__init__")
            if isinstance(target, Func) and (target.key, guarded) not in seen:
                seen.add((target.key, guarded))
                env = resolver.bind(target, call, ctx)
                visit(
                    target.node.body,
                    resolver.func_ctx(target, env),
                    guarded,
                    chain + (f"{target.qualname}()",),
                    depth + 1,
                )

    visit(guarded_body, Ctx(module), True, (), 0)
    visit(on_import, Ctx(module), False, (), 0)
    return found


def _unreached(resolver: Resolver, reached: list[StartCall]) -> list[tuple[Func, ast.Call]]:
    lines = {(id(s.call)) for s in reached}
    found = []
    for module in list(resolver.project.modules.values()):
        for func in resolver.functions(module):
            for call in own_calls(func.node.body):
                if id(call) not in lines and _is_start(resolver, call, Ctx(module, func))[0]:
                    found.append((func, call))
    return found


def _candidates(resolver: Resolver, expr: ast.AST, ctx: Ctx) -> list[Func]:
    """The functions a handler expression can be: both arms of `a if cond else b`, a callable's __call__."""
    if isinstance(expr, ast.IfExp):
        return _candidates(resolver, expr.body, ctx) + _candidates(resolver, expr.orelse, ctx)
    found = resolver.resolve(expr, ctx)
    if isinstance(found, Instance):
        found = resolver.member(found, "__call__")
    return [found] if isinstance(found, Func) else []


def _handler_from_config(resolver: Resolver, start: StartCall) -> tuple[list[Func], ast.AST | None, set[str], bool]:
    call = start.call
    config_expr = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "config"), None)
    if config_expr is None:
        return [], None, set(), False
    value = resolver.value_node(config_expr, start.ctx)
    if value is None or not isinstance(value[0], (ast.Dict, ast.Call)):
        return [], None, set(), True
    node, ctx = value
    if isinstance(node, ast.Call) and getattr(node.func, "id", "") != "dict":
        return [], None, set(), True
    keys, open_ = dict_keys(node)
    handler_expr = dict_value(node, "handler")
    if handler_expr is not None and isinstance(handler_expr, ast.Name):
        bound = resolver.value_node(handler_expr, ctx)  # `h = a if cond else b; start({"handler": h})`
        if bound is not None and isinstance(bound[0], ast.IfExp):
            handler_expr, ctx = bound
    handlers = _candidates(resolver, handler_expr, ctx) if handler_expr is not None else []
    return list({h.key: h for h in handlers}.values()), node, keys, open_


def find_entry(resolver: Resolver) -> Entry:
    """The handler(s) and how the worker starts, as far as the source shows."""
    starts = find_starts(resolver)
    guards = tuple(main_guards(resolver))
    handlers: list[Func] = []
    config, keys, open_ = None, set(), True
    start = next((s for s in starts if s.guarded), starts[0] if starts else None)
    found_by = ""
    if start is not None:
        handlers, config, keys, open_ = _handler_from_config(resolver, start)
        found_by = "start config" if handlers else ""
    if not handlers:
        candidate = resolver.lookup("handler", Ctx(resolver.project.handler))
        if isinstance(candidate, Func):
            handlers, found_by = [candidate], "module function"
    unreached = tuple(_unreached(resolver, starts)) if not starts else ()
    return Entry(tuple(handlers), found_by, tuple(starts), unreached, guards, config, frozenset(keys), open_)
