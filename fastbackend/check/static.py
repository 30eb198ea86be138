"""Stage 5: the static review: run every static rule module over the loaded project, in order."""

from __future__ import annotations

from dataclasses import dataclass

from fastbackend.check import checks_handler, checks_payload, checks_runtime, checks_start
from fastbackend.check.analysis import Analysis, handler_info, suppressed
from fastbackend.check.entry import Entry, find_entry
from fastbackend.check.flow import Returns
from fastbackend.check.model import Advice, Compliant, Finding, HandlerInfo
from fastbackend.check.resolve import Resolver
from fastbackend.check.source import Project, display_path


@dataclass(frozen=True)
class StaticResult:
    handler: HandlerInfo | None
    findings: tuple[Finding, ...]
    suppressed: tuple[Finding, ...]
    compliant: tuple[Compliant, ...]
    advice: tuple[Advice, ...]
    notes: tuple[str, ...]
    modules: tuple[str, ...]
    entry: Entry


def analyse(project: Project) -> StaticResult:
    """Run every static rule; returns findings (suppressions applied) and evidence."""
    resolver = Resolver(project)
    entry = find_entry(resolver)
    a = Analysis(project, resolver, entry, Returns(resolver), entry.handler)
    checks_start.check_sources(a)
    checks_start.check_start(a)
    for handler in entry.handlers or (None,):
        each = a.for_handler(handler)
        checks_handler.check_handler(each)
        checks_runtime.check_setup(each)
        checks_payload.check_payload(each)
    if len(entry.handlers) > 1:
        names = ", ".join(f"{h.qualname}()" for h in entry.handlers)
        a.notes.append(f"start() is given one of {names}, chosen at run time; each was reviewed")
    checks_start.check_local_testing(a)
    checks_payload.future_improvements(a)
    kept = tuple(f for f in a.findings if not suppressed(project, f))
    dropped = tuple(f for f in a.findings if f not in kept)
    modules = tuple(display_path(m.path) for m in project.modules.values())
    return StaticResult(
        handler_info(entry), kept, dropped, tuple(a.compliant), tuple(a.advice), tuple(a.notes), modules, a.entry
    )
