"""What a review is made of: findings, compliant items, dynamic probes, area scores, the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastbackend.check.checklist import Area, Rule, Severity
from fastbackend.check.rules import rule


class CheckError(Exception):
    """The review cannot be written (missing path, unparseable handler, no test input for --run).

    The message is one line, ready for the terminal.
    """


@dataclass(frozen=True)
class Finding:
    """One failed item: a catalogue rule at a place in the source, with what was seen there."""

    rule_id: str
    file: str
    line: int
    detail: str

    @property
    def rule(self) -> Rule:
        return rule(self.rule_id)

    @property
    def severity(self) -> Severity:
        return self.rule.severity

    @property
    def area(self) -> Area:
        return self.rule.area

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def to_json(self) -> dict[str, Any]:
        r = self.rule
        return {
            "id": r.id,
            "severity": r.severity.value,
            "area": r.area.value,
            "checklist": r.checklist,
            "title": r.title,
            "file": self.file,
            "line": self.line,
            "detail": self.detail,
            "fix": r.fix,
        }


@dataclass(frozen=True)
class Compliant:
    """Evidence that a checklist item passes: where it was seen."""

    item: str
    file: str
    line: int
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"item": self.item, "file": self.file, "line": self.line, "detail": self.detail}


@dataclass(frozen=True)
class Probe:
    """One dynamic check (--run): what was sent, whether it passed, how long it took."""

    item: str
    name: str
    passed: bool
    seconds: float | None
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "item": self.item,
            "name": self.name,
            "passed": self.passed,
            "seconds": None if self.seconds is None else round(self.seconds, 3),
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Advice:
    """A future improvement the review suggested (monitoring, rate limiting, caching): not scored."""

    topic: str
    present: bool
    where: str
    suggestion: str

    def to_json(self) -> dict[str, Any]:
        return {"topic": self.topic, "present": self.present, "where": self.where, "suggestion": self.suggestion}


@dataclass(frozen=True)
class AreaScore:
    area: Area
    status: str  # pass | minor | warn | fail
    score: int
    rule_ids: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"area": self.area.value, "status": self.status, "score": self.score, "findings": list(self.rule_ids)}


@dataclass(frozen=True)
class HandlerInfo:
    """The handler the review is about, as the static analysis identified it."""

    name: str
    kind: str  # sync | async | generator | async generator | unknown
    file: str
    line: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "file": self.file, "line": self.line}


@dataclass(frozen=True)
class Report:
    """A finished review; rendered as Markdown or JSON, and the source of the exit status."""

    target: str
    handler: HandlerInfo | None
    modules: tuple[str, ...]
    findings: tuple[Finding, ...]
    suppressed: tuple[Finding, ...]
    compliant: tuple[Compliant, ...]
    checklist: tuple[tuple[str, bool, tuple[str, ...]], ...]  # (item, passed, failing rule ids)
    areas: tuple[AreaScore, ...]
    score: float
    verdict: str
    advice: tuple[Advice, ...] = ()
    probes: tuple[Probe, ...] = ()
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    ran: bool = False
    static_seconds: float = 0.0
    dynamic_seconds: float = 0.0

    def count(self, severity: Severity) -> int:
        return sum(1 for f in self.findings if f.severity is severity)

    def exit_code(self, strict: bool = False) -> int:
        """1 when a critical item fails (with `strict`, when anything fails), else 0."""
        if strict:
            return 1 if self.findings else 0
        return 1 if self.count(Severity.CRITICAL) else 0

    def summary_line(self) -> str:
        counts = ", ".join(f"{self.count(s)} {s.value}" for s in Severity)
        mode = "static + run" if self.ran else "static"
        return f"{self.target}: {format_score(self.score)}/10 {self.verdict} ({counts}; {mode})"


def format_score(score: float) -> str:
    """8.0 -> "8", 9.9 -> "9.9"."""
    return f"{score:.1f}".rstrip("0").rstrip(".")
