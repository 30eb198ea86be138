"""Stage 7: area statuses, the score out of 10, the verdict, the checklist.

Calibrated on the original review (FastBackend 1.0.0-fast, 8/10, "conditional go"): each of the
seven areas of its summary table scores 10 when nothing fails there, 9 with only low findings,
8 with a high one (it had these in Error Handling and Local Testing), 5 with a critical one (a
failing area keeps half its credit, as the review kept for Payload Limits and Performance);
the score is their mean. 3 x 10 + 2 x 8 + 2 x 5 over 7 areas is the review's 8. A NO-GO worker (it
cannot take a job at all) scores at most 5.
"""

from __future__ import annotations

from fastbackend.check.checklist import DYNAMIC_CHECKLIST, STATIC_CHECKLIST, Area, Severity
from fastbackend.check.model import AreaScore, Compliant, Finding, Probe
from fastbackend.check.rules import RULES

AREA_SCORE = {None: 10, Severity.LOW: 9, Severity.HIGH: 8, Severity.CRITICAL: 5}
AREA_STATUS = {None: "pass", Severity.LOW: "minor", Severity.HIGH: "warn", Severity.CRITICAL: "fail"}
_ORDER = (Severity.CRITICAL, Severity.HIGH, Severity.LOW)
# Critical findings here mean the worker cannot take a job at all: no-go, not conditional.
_NO_GO_AREAS = frozenset({Area.HANDLER_STRUCTURE, Area.IO_FORMAT, Area.SERVERLESS_START})
_NO_GO_RULES = frozenset({"run-test-input", "run-local-api", "run-test-job-failed"})


def worst(findings: list[Finding] | tuple[Finding, ...]) -> Severity | None:
    severities = {f.severity for f in findings}
    return next((s for s in _ORDER if s in severities), None)


def score_areas(findings: tuple[Finding, ...]) -> tuple[AreaScore, ...]:
    areas = []
    for area in Area:
        mine = [f for f in findings if f.area is area]
        level = worst(mine)
        ids = tuple(dict.fromkeys(f.rule_id for f in sorted(mine, key=lambda f: _ORDER.index(f.severity))))
        areas.append(AreaScore(area, AREA_STATUS[level], AREA_SCORE[level], ids))
    return tuple(areas)


NO_GO_CEILING = 5.0  # a worker that cannot take a job scores at most what one failing area keeps


def overall(areas: tuple[AreaScore, ...], verdict: str = "") -> float:
    """The mean of the area scores; for a NO-GO worker at most NO_GO_CEILING, however many areas
    its failure touches (a handler failing every test job is not a 9.3/10 worker)."""
    score = round(sum(a.score for a in areas) / len(areas), 1)
    return min(score, NO_GO_CEILING) if verdict == "NO-GO" else score


def verdict(findings: tuple[Finding, ...]) -> str:
    """GO, CONDITIONAL GO (fix the listed items; critical ones before deploying), or NO-GO."""
    critical = [f for f in findings if f.severity is Severity.CRITICAL]
    if any(f.area in _NO_GO_AREAS or f.rule_id in _NO_GO_RULES for f in critical):
        return "NO-GO"
    if critical or any(f.severity is Severity.HIGH for f in findings):
        return "CONDITIONAL GO"
    return "GO"


def checklist(
    findings: tuple[Finding, ...],
    probes: tuple[Probe, ...] = (),
    ran: bool = False,
) -> tuple[tuple[str, bool, tuple[str, ...]], ...]:
    """Each checklist item, whether it passes, and the rule ids that fail it. A dynamic item passes
    only when one of its probes ran and passed (a server that never started proves nothing)."""
    items = STATIC_CHECKLIST + (DYNAMIC_CHECKLIST if ran else ())
    rows = []
    for item in items:
        failing = tuple(dict.fromkeys(f.rule_id for f in findings if RULES[f.rule_id].checklist == item))
        if item in DYNAMIC_CHECKLIST and not failing and not any(p.item == item and p.passed for p in probes):
            rows.append((item, False, ("not run",)))
            continue
        rows.append((item, not failing, failing))
    return tuple(rows)


def evidence_for(item: str, compliant: tuple[Compliant, ...]) -> list[Compliant]:
    return [c for c in compliant if c.item == item]
