"""Stage 5: the static review: run every static rule over the loaded project.

`Analysis` is the working state the rule modules share (resolver, entry point, reachable
code, and the findings and evidence collected so far) and the inline suppressions
(`# fastbackend: ignore[rule-id]` on the reported line). `static.analyse` runs the rule modules
over it; they import this module, never the other way round.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from fastbackend.check.entry import Entry
from fastbackend.check.flow import Returns, Step, Unit, reach, walk_units
from fastbackend.check.model import Advice, Compliant, Finding, HandlerInfo
from fastbackend.check.resolve import Ctx, Func, Resolver
from fastbackend.check.source import Module, Project, display_path
from fastbackend.check.syntax import is_main_guard

_SUPPRESS = re.compile(r"#\s*fastbackend:\s*ignore(?:\[([a-z0-9,\s-]+)\])?")


@dataclass
class Analysis:
    """Shared state of one static review."""

    project: Project
    resolver: Resolver
    entry: Entry
    returns: Returns
    handler: Func | None  # the handler under review (start() may be given one of several)
    findings: list[Finding] = field(default_factory=list)
    compliant: list[Compliant] = field(default_factory=list)
    advice: list[Advice] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _units: dict[str, list[tuple[Func, Step | None]]] = field(default_factory=dict)

    # -- reporting -----------------------------------------------------------
    def for_handler(self, handler: Func | None) -> Analysis:
        """The same review (shared findings and evidence) about another handler candidate."""
        return dataclasses.replace(self, handler=handler, _units={})

    def add(self, rule_id: str, where: Module | Path, line: int, detail: str) -> None:
        path = where.path if isinstance(where, Module) else where
        finding = Finding(rule_id, display_path(path), max(1, line), detail)
        if finding not in self.findings:
            self.findings.append(finding)

    def ok(self, item: str, where: Module | Path, line: int, detail: str) -> None:
        path = where.path if isinstance(where, Module) else where
        evidence = Compliant(item, display_path(path), max(1, line), detail)
        if evidence not in self.compliant:
            self.compliant.append(evidence)

    def loc(self, module: Module, node: ast.AST | int) -> str:
        line = node if isinstance(node, int) else getattr(node, "lineno", 1)
        return f"{display_path(module.path)}:{line}"

    # -- code sets -----------------------------------------------------------
    def handler_code(self, *, may: bool) -> list[tuple[Func, Step | None]]:
        """The handler and every function reachable from it (precise or may)."""
        key = "may" if may else "precise"
        if key not in self._units:
            self._units[key] = walk_units(self.resolver, self.handler, may=may) if self.handler else []
        return self._units[key]

    def start_code(self) -> list[tuple[list[ast.stmt], Ctx]]:
        """Code that runs when the worker starts: the main guard and what it calls (precise)."""
        module = self.project.handler
        body = [s for g in self.entry.guards for s in g.body]
        units = [(body, Ctx(module))]
        for step in reach(self.resolver, [Unit(tuple(body), Ctx(module))], may=False).values():
            units.append((step.func.node.body, Ctx(step.func.module, step.func)))
        return units

    def import_code(self) -> list[tuple[list[ast.stmt], Ctx, Step | None]]:
        """Code that runs on import: every module's top level (outside the main guard) and its calls."""
        starts = []
        for module in self.project.modules.values():
            body = [s for s in module.tree.body if not is_main_guard(s)]
            starts.append(Unit(tuple(body), Ctx(module)))
        units: list[tuple[list[ast.stmt], Ctx, Step | None]] = [(list(u.stmts), u.ctx, None) for u in starts]
        for step in reach(self.resolver, starts, may=False).values():
            units.append((step.func.node.body, Ctx(step.func.module, step.func), step))
        return units

    def all_code(self) -> list[tuple[Module, ast.AST]]:
        """Every module in the closure, as (module, tree): for rules about anything reachable."""
        return [(m, m.tree) for m in self.project.modules.values()]

    def chain(self, step: Step | None) -> str:
        """`handler() -> Worker.handle() -> load()` for messages."""
        if step is None:
            return ""
        names = [f"{s.func.qualname}()" for s in step.chain()]
        start = f"{self.handler.qualname}()" if self.handler else "module code"
        return " -> ".join([start, *names])


def _kind(h: Func) -> str:
    if h.is_generator:
        return "async generator" if h.is_async else "generator"
    return "async" if h.is_async else "sync"


def handler_info(entry: Entry) -> HandlerInfo | None:
    if not entry.handlers:
        return None
    h = entry.handlers[0]
    name = " or ".join(f.qualname for f in entry.handlers)
    kind = " or ".join(dict.fromkeys(_kind(f) for f in entry.handlers))
    return HandlerInfo(name, kind, display_path(h.module.path), h.node.lineno)


def suppressed(project: Project, finding: Finding) -> bool:
    """True when the finding's line carries `# fastbackend: ignore` (all rules) or `ignore[id, ...]`."""
    for module in project.modules.values():
        if display_path(module.path) == finding.file and 0 < finding.line <= len(module.lines):
            match = _SUPPRESS.search(module.lines[finding.line - 1])
            if match:
                ids = match.group(1)
                return ids is None or finding.rule_id in {i.strip() for i in ids.split(",")}
    return False
