"""Static rules about the job's payload (a size check within RunPod's limits), and the unscored advice."""

from __future__ import annotations

import ast
import re

from fastbackend.check import checklist as R
from fastbackend.check.analysis import Analysis
from fastbackend.check.model import Advice
from fastbackend.check.resolve import Ctx, Func
from fastbackend.check.source import display_path
from fastbackend.check.syntax import own_nodes

MB = 1024 * 1024
RUNSYNC_LIMIT = 20 * MB
SIZE = re.compile(r"(?i)(size|bytes|len|length|getsizeof|nbytes)")
LIMIT = re.compile(r"(?i)(limit|max|cap|threshold|allowed)")
PAYLOAD = re.compile(r"(?i)(payload|request|body|input|job|json|dumps|too.?large)")


# -- payload ---------------------------------------------------------------------
def _idents(node: ast.AST) -> list[str]:
    return [
        n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(node) if isinstance(n, (ast.Name, ast.Attribute))
    ]


def _number(a: Analysis, node: ast.AST, ctx: Ctx, depth: int = 0) -> float | None:
    """Constant-fold a numeric expression (names of module constants included)."""
    if depth > 8:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.BinOp):
        left, right = _number(a, node.left, ctx, depth + 1), _number(a, node.right, ctx, depth + 1)
        if left is None or right is None:
            return None
        ops = {
            ast.Mult: lambda x, y: x * y,
            ast.Add: lambda x, y: x + y,
            ast.Sub: lambda x, y: x - y,
            ast.Pow: lambda x, y: x**y if y < 64 else None,
            ast.LShift: lambda x, y: int(x) << int(y),
        }
        op = ops.get(type(node.op))
        return op(left, right) if op else None
    if isinstance(node, (ast.Name, ast.Attribute)):
        value = a.resolver.value_node(node, ctx) if isinstance(node, ast.Name) else None
        if value is not None and value[0] is not node:
            return _number(a, value[0], value[1], depth + 1)
    return None


def _size_check(a: Analysis, node: ast.Compare, func: Func, ctx: Ctx) -> tuple[bool, float | None]:
    if not any(isinstance(op, (ast.Gt, ast.GtE, ast.Lt, ast.LtE)) for op in node.ops):
        return False, None
    operands = [node.left, *node.comparators]
    sized = [o for o in operands if any(SIZE.search(i) for i in _idents(o))]
    if not sized:
        return False, None
    for other in operands:
        if any(other is s for s in sized) and len(sized) == 1:
            continue
        number = _number(a, other, ctx)
        if number is not None and number >= 1_000_000 or any(LIMIT.search(i) for i in _idents(other)):
            context = " ".join(_idents(node)) + " " + func.qualname
            if PAYLOAD.search(context):
                return True, number
    return False, None


def check_payload(a: Analysis) -> None:
    """A comparison of the input's size with a limit in what the handler runs, within RunPod's limits."""
    if a.handler is None:
        return
    for func, _ in a.handler_code(may=True):
        ctx = Ctx(func.module, func)
        for node in own_nodes(func.node.body):
            if isinstance(node, ast.Compare):
                found, limit = _size_check(a, node, func, ctx)
                if not found:
                    continue
                if limit is not None and limit > RUNSYNC_LIMIT:
                    a.add(
                        "payload-limit-too-high",
                        func.module,
                        node.lineno,
                        f"limit {limit / MB:.1f} MB in `{ast.unparse(node)}`",
                    )
                a.ok(R.PAYLOAD_VALIDATION, func.module, node.lineno, f"`{ast.unparse(node)}` in {func.qualname}()")
                return
    a.add(
        "no-payload-check",
        a.handler.module,
        a.handler.node.lineno,
        "no comparison of the input's size against a limit in anything the handler runs",
    )


# -- future improvements (advice, not scored) -----------------------------------
def future_improvements(a: Analysis) -> None:
    """The review's future improvements (monitoring, rate limiting, caching): present or not, unscored."""
    idents: dict[str, str] = {}
    for module, tree in a.all_code():
        for node in ast.walk(tree):
            name = (
                getattr(node, "id", None)
                or getattr(node, "attr", None)
                or getattr(node, "name", None)
                or (node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None)
            )
            if isinstance(name, str) and len(name) < 60:
                idents.setdefault(name, a.loc(module, node) if hasattr(node, "lineno") else display_path(module.path))
    topics = (
        (
            "Monitoring",
            re.compile(r"(?i)metrics|telemetry|prometheus|statsd"),
            "answer a `health` / `metrics` op (uptime, jobs and errors by code, latency percentiles, memory)",
        ),
        (
            "Rate limiting",
            re.compile(r"(?i)rate.?limit|throttl|semaphore|admission|in_flight|max_concurrent"),
            "cap jobs in flight and queued work per worker; answer RATE_LIMITED at once over the cap",
        ),
        (
            "Caching",
            re.compile(r"(?i)lru_cache|^cache$|_cache\b|cache_|\bcached"),
            "cache repeated work (loaded adapters, preprocessing of identical inputs) with a bounded LRU",
        ),
    )
    for topic, pattern, suggestion in topics:
        where = next((loc for name, loc in idents.items() if pattern.search(name)), "")
        a.advice.append(Advice(topic, bool(where), where, suggestion))
