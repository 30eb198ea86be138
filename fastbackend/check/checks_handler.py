"""Static rules about the handler itself: signature, input, results, errors, logging."""

from __future__ import annotations

import ast
import re

from fastbackend.check import checklist as R
from fastbackend.check.analysis import Analysis
from fastbackend.check.flow import (
    Leaf,
    broad_tries,
    call_targets,
    decorator_wrappers,
    dict_keys,
    dict_value,
    inside,
    is_broad,
    reraises,
)
from fastbackend.check.resolve import Ctx, External, Func
from fastbackend.check.source import Module
from fastbackend.check.syntax import own_nodes

_ERROR_STATUSES = {"error", "failed", "failure", "fail"}
_JSON_LOG_PACKAGES = ("structlog", "pythonjsonlogger", "json_log_formatter", "loguru", "ecs_logging")
_LOG_SINKS = re.compile(r"^(print|write|debug|info|warning|warn|error|exception|critical|log)$")
_NOT_JSON_CALLS = ("numpy.", "torch.", "PIL.", "datetime.", "decimal.", "uuid.uuid")
_NOT_JSON_METHODS = {
    "encode": "bytes",
    "tobytes": "bytes",
    "numpy": "a numpy array",
    "cpu": "a tensor",
    "detach": "a tensor",
    "to": "a tensor",
}
_NOT_JSON_BUILTINS = {
    "set": "a set",
    "frozenset": "a set",
    "bytes": "bytes",
    "bytearray": "bytes",
    "object": "an object",
    "Exception": "an exception",
}


def check_handler(a: Analysis) -> None:
    """Handler structure, input, results, error shape and logging (or `no-handler`)."""
    h = a.handler
    if h is None:
        start = a.entry.guarded_start or (a.entry.starts[0] if a.entry.starts else None)
        line = start.line if start else 1
        detail = (
            "start() is given no handler this analysis can find"
            if start
            else 'no `handler` function and no `runpod.serverless.start({"handler": ...})`'
        )
        a.add("no-handler", a.project.handler, line, detail)
        return
    _signature(a, h)
    _input(a, h)
    if h.is_generator:
        _generator(a, h)
    else:
        _returns(a, h)
    _errors(a, h)
    _logging(a, h)


def _signature(a: Analysis, h: Func) -> None:
    args = h.node.args
    positional = [p.arg for p in args.posonlyargs + args.args][1 if h.bound else 0 :]
    required = len(positional) - len(args.defaults)
    required_kw = [k.arg for k, d in zip(args.kwonlyargs, args.kw_defaults) if d is None]
    shown = f"{h.qualname}({', '.join(positional) or ('*' + args.vararg.arg if args.vararg else '')})"
    if (not positional and args.vararg is None) or required > 1 or required_kw:
        a.add(
            "handler-signature",
            h.module,
            h.node.lineno,
            f"`{shown}`: RunPod calls it with exactly one argument, the job",
        )
        return
    kind = "async " if h.is_async else ""
    kind += "generator " if h.is_generator else ""
    via = " (the handler passed to start())" if a.entry.found_by == "start config" else ""
    a.ok(R.SIGNATURE, h.module, h.node.lineno, f"`{shown}`, {kind or 'sync '}function{via}")


def _reads_input(node: ast.AST) -> bool:
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and node.slice.value == "input":
        return True
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and bool(node.args)
        and isinstance(node.args[0], ast.Constant)
        and node.args[0].value == "input"
    )


def _input(a: Analysis, h: Func) -> None:
    for func, _ in a.handler_code(may=True):
        for node in own_nodes(func.node.body):
            if _reads_input(node):
                a.ok(R.INPUT, func.module, node.lineno, f"`{ast.unparse(node)}` in {func.qualname}()")
                return
    a.add("no-input-read", h.module, h.node.lineno, f'{h.qualname}() never reads `job["input"]`')


def _generator(a: Analysis, h: Func) -> None:
    a.add(
        "generator-test-input",
        h.module,
        h.node.lineno,
        f"{h.qualname}() is a generator: `--test_input` prints the generator object and runs none of it",
    )
    config = a.entry.config
    aggregate = dict_value(config, "return_aggregate_stream") if config is not None else None
    if config is not None and aggregate is None and not a.entry.config_open:
        line = a.entry.guarded_start.line if a.entry.guarded_start else h.node.lineno
        a.add(
            "stream-not-aggregated",
            a.project.handler,
            line,
            "start() config has no `return_aggregate_stream`: /run and /runsync outputs will be empty",
        )
    elif isinstance(aggregate, ast.Constant) and aggregate.value:
        a.ok(R.RETURN_FORMAT, a.project.handler, aggregate.lineno, "streams, with `return_aggregate_stream: True`")


def output_leaves(a: Analysis, h: Func) -> list[Leaf]:
    """What the handler hands back: its return leaves, or for a generator what it yields."""
    if not h.is_generator:
        return a.returns.leaves(h)
    leaves: list[Leaf] = []
    for node in own_nodes(h.node.body):
        if isinstance(node, ast.Yield) and node.value is not None:
            leaves += a.returns.value_leaves(node.value, Ctx(h.module, h), h, 0)
    return leaves


def _returns(a: Analysis, h: Func) -> None:
    leaves = output_leaves(a, h)
    bad = [leaf for leaf in leaves if leaf.kind in ("none", "other")]
    for leaf in bad:
        inner = "" if leaf.func == h else f" (in {leaf.func.qualname}(), which the handler returns)"
        a.add("non-dict-return", leaf.module, leaf.line, f"returns {leaf.what}{inner}")
    dicts = [leaf for leaf in leaves if leaf.kind == "dict"]
    for leaf in dicts:
        _serialisable(a, leaf)
    if dicts and not bad:
        unknown = sum(1 for leaf in leaves if leaf.kind == "unknown")
        more = f"; {unknown} path(s) could not be followed" if unknown else ""
        a.ok(R.RETURN_FORMAT, h.module, h.node.lineno, f"every return path followed returns a dict{more}")
    elif not dicts and not bad:
        a.notes.append(f"{h.qualname}() returns values this analysis cannot follow; the return format is unchecked")


def _not_json(a: Analysis, value: ast.AST, ctx: Ctx, excepts: set[str], depth: int = 0) -> str | None:
    if depth > 4:
        return None
    if isinstance(value, ast.Constant) and isinstance(value.value, bytes):
        return "bytes"
    if isinstance(value, (ast.Set, ast.SetComp)):
        return "a set"
    if isinstance(value, ast.Name) and value.id in excepts:
        return "an exception object"
    if isinstance(value, (ast.Dict, ast.List, ast.Tuple)):
        children = value.values if isinstance(value, ast.Dict) else value.elts
        for child in children:
            found = _not_json(a, child, ctx, excepts, depth + 1)
            if found:
                return found
        return None
    if isinstance(value, ast.Call):
        if isinstance(value.func, ast.Attribute) and value.func.attr in _NOT_JSON_METHODS and not value.args:
            return _NOT_JSON_METHODS[value.func.attr]
        target = a.resolver.resolve(value.func, ctx)
        if isinstance(target, External):
            if target.dotted.startswith("builtins."):
                return _NOT_JSON_BUILTINS.get(target.dotted.split(".", 1)[1])
            if target.dotted.startswith(_NOT_JSON_CALLS):
                return f"the result of {target.dotted}()"
    return None


def _serialisable(a: Analysis, leaf: Leaf) -> None:
    node = leaf.node
    if not isinstance(node, ast.Dict):
        return
    ctx = Ctx(leaf.module, leaf.func)
    excepts = {n.name for n in own_nodes(leaf.func.node.body) if isinstance(n, ast.ExceptHandler) and n.name}
    for key, value in zip(node.keys, node.values):
        found = _not_json(a, value, ctx, excepts)
        if found:
            name = key.value if isinstance(key, ast.Constant) else "**"
            a.add("not-serialisable", leaf.module, value.lineno, f"`{name}` holds {found}")


def protection(a: Analysis, func: Func, depth: int = 0) -> tuple[Func, ast.ExceptHandler, str] | None:
    """Where the handler's exceptions are caught, and how: "own" (a broad except in it), "delegate"
    (in every function it returns the result of) or "decorator" (in a decorator's wrapper)."""
    for t in broad_tries(func.node.body):
        for handler in t.handlers:
            if is_broad(handler) and not reraises(handler):
                return func, handler, "own"
    if depth >= 4:
        return None
    returns = [n for n in own_nodes(func.node.body) if isinstance(n, ast.Return) and n.value is not None]
    delegated = []
    for ret in returns:
        value = ret.value.value if isinstance(ret.value, ast.Await) else ret.value
        targets = call_targets(a.resolver, value, Ctx(func.module, func), False) if isinstance(value, ast.Call) else []
        found = next((p for p in (protection(a, t, depth + 1) for t in targets) if p), None)
        delegated.append(found)
    if delegated and all(delegated):
        return delegated[0][0], delegated[0][1], "delegate"
    for inner in decorator_wrappers(a.resolver, func):
        found = protection(a, inner, depth + 1)
        if found:
            return found[0], found[1], "decorator"
    return None


def _errors(a: Analysis, h: Func) -> None:
    caught = protection(a, h)
    wrapped = caught is not None and caught[2] == "decorator"  # the wrapper catches what the body raises
    covering = [t for t in broad_tries(h.node.body) if any(is_broad(x) and not reraises(x) for x in t.handlers)]
    raises = (
        []
        if wrapped
        else [
            n
            for n in own_nodes(h.node.body)
            if isinstance(n, ast.Raise) and not any(inside(n, t.body) for t in covering)
        ]
    )
    for node in raises[:3]:
        a.add("raises", h.module, node.lineno, f"`{ast.unparse(node)[:80]}` escapes {h.qualname}()")
    does_work = any(isinstance(n, (ast.Call, ast.Subscript)) for n in own_nodes(h.node.body))
    if caught is None and not raises and does_work:
        narrow = [x for n in own_nodes(h.node.body) if isinstance(n, ast.Try) for x in n.handlers]
        what = (
            f"catches only {', '.join(ast.unparse(x.type) for x in narrow if x.type)}"
            if narrow
            else "has no try/except"
        )
        a.add(
            "raises",
            h.module,
            h.node.lineno,
            f"{h.qualname}() {what}: other exceptions reach RunPod as a traceback with no code",
        )
    if caught is None:
        return
    func, handler, _ = caught
    before = len(a.findings)
    shaped = _error_shape(a, h) and len(a.findings) == before
    if not raises:
        a.ok(
            R.ERRORS,
            func.module,
            handler.lineno,
            f"`{ast.unparse(handler.type) if handler.type else 'except'}` caught in {func.qualname}()"
            + (', answered as `{"error": str, "code", ...}`' if shaped else ""),
        )
    _refresh_and_swallowed(a, h)


def _error_shape(a: Analysis, h: Func) -> int:
    """Check every returned dict that reports an error; returns how many have the full shape."""
    good = 0
    for leaf in output_leaves(a, h):
        if leaf.kind != "dict":
            continue
        keys, open_ = dict_keys(leaf.node)
        status = dict_value(leaf.node, "status")
        is_error_status = isinstance(status, ast.Constant) and str(status.value).lower() in _ERROR_STATUSES
        if "error" not in keys:
            if is_error_status and not open_:
                a.add(
                    "error-without-error-key",
                    leaf.module,
                    leaf.line,
                    "an error is returned with no `error` key: RunPod reports the job COMPLETED",
                )
            continue
        value = dict_value(leaf.node, "error")
        excepts = {n.name for n in own_nodes(leaf.func.node.body) if isinstance(n, ast.ExceptHandler) and n.name}
        if isinstance(value, (ast.Dict, ast.List, ast.Set, ast.Tuple, ast.DictComp, ast.ListComp)):
            a.add("error-not-string", leaf.module, value.lineno, f"`error` is a {type(value).__name__.lower()}")
        elif isinstance(value, ast.Name) and value.id in excepts:
            a.add("error-not-string", leaf.module, value.lineno, f"`error` is the exception object `{value.id}`")
        elif not ({"code", "error_code"} & keys) and not open_:
            a.add("error-without-code", leaf.module, leaf.line, f"error dict with keys {sorted(keys)}: no `code`")
        else:
            good += 1
    return good


def _refresh_and_swallowed(a: Analysis, h: Func) -> None:
    refresh = None
    for func, _ in a.handler_code(may=True):
        for node in own_nodes(func.node.body):
            if (
                isinstance(node, ast.Constant)
                and node.value == "refresh_worker"
                or (isinstance(node, ast.keyword) and node.arg == "refresh_worker")
            ):
                refresh = refresh or (func, node)
            if (
                isinstance(node, ast.ExceptHandler)
                and is_broad(node)
                and all(
                    isinstance(s, (ast.Pass, ast.Continue))
                    or isinstance(s, ast.Expr)
                    and isinstance(s.value, ast.Constant)
                    for s in node.body
                )
            ):
                a.add(
                    "swallowed-exception",
                    func.module,
                    node.lineno,
                    f"`{ast.unparse(node.type) if node.type else 'except'}` in {func.qualname}() drops the error",
                )
    if refresh is None:
        a.add(
            "no-refresh-worker",
            h.module,
            h.node.lineno,
            "no path returns `refresh_worker`: a worker out of memory keeps taking jobs",
        )
    else:
        func, node = refresh
        a.ok(
            R.ERRORS,
            func.module,
            getattr(node, "lineno", func.node.lineno),
            f"`refresh_worker` set in {func.qualname}() for fatal errors",
        )


def _json_logging(a: Analysis) -> tuple[Module, ast.AST, str] | None:
    for module, tree in a.all_code():
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [n.name for n in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                if any(n and n.split(".")[0] in _JSON_LOG_PACKAGES for n in names):
                    return module, node, "a JSON logging library"
    for module in a.project.modules.values():
        for func in a.resolver.functions(module):
            ctx = Ctx(module, func)
            dumps = [
                c
                for c in own_nodes(func.node.body)
                if isinstance(c, ast.Call) and a.resolver.dotted(c.func, ctx) == "json.dumps"
            ]
            if not dumps:
                continue
            sinks = [
                c
                for c in own_nodes(func.node.body)
                if isinstance(c, ast.Call)
                and _LOG_SINKS.match(c.func.attr if isinstance(c.func, ast.Attribute) else getattr(c.func, "id", ""))
            ]
            formatter = func.owner is not None and any(
                (a.resolver.dotted(b, Ctx(module)) or "").startswith("logging.") for b in func.owner.node.bases
            )
            if sinks or formatter:
                what = "a JSON log formatter" if formatter else "JSON log lines"
                return module, dumps[0], f"{what} in {func.qualname}()"
    return None


def _logging(a: Analysis, h: Func) -> None:
    found = _json_logging(a)
    if found is None:
        a.add(
            "no-structured-logging",
            h.module,
            h.node.lineno,
            "no JSON logging found in the handler or the code it imports",
        )
    else:
        module, node, what = found
        a.ok(R.ERRORS, module, node.lineno, f"structured logging: {what}")
