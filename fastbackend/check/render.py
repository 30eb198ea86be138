"""Stage 8: the review as Markdown (the original's sections) or as JSON."""

from __future__ import annotations

import json
from typing import Any

from fastbackend.check.checklist import DYNAMIC_CHECKLIST, Severity
from fastbackend.check.model import Finding, Report, format_score
from fastbackend.check.rules import RULES
from fastbackend.check.scoring import AREA_SCORE, evidence_for

SCHEMA_VERSION = 1
_ICON = {"pass": "✅", "minor": "✅", "warn": "⚠️", "fail": "❌"}
_SECTION = {
    Severity.CRITICAL: "Critical: fix before deployment",
    Severity.HIGH: "High priority: fix after deployment at the latest",
    Severity.LOW: "Low priority",
}
_WHEN = {
    Severity.CRITICAL: "Before deployment",
    Severity.HIGH: "Soon after deployment",
    Severity.LOW: "When convenient",
}


def to_json(report: Report) -> dict[str, Any]:
    """The report as one JSON object (stable keys; `schema_version` changes when they do)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "target": report.target,
        "handler": report.handler.to_json() if report.handler else None,
        "score": report.score,
        "score_text": f"{format_score(report.score)}/10",
        "verdict": report.verdict,
        "counts": {s.value: report.count(s) for s in Severity},
        "areas": [a.to_json() for a in report.areas],
        "findings": [f.to_json() for f in report.findings],
        "suppressed": [f.to_json() for f in report.suppressed],
        "compliant": [c.to_json() for c in report.compliant],
        "checklist": [{"item": item, "passed": passed, "failing": list(ids)} for item, passed, ids in report.checklist],
        "dynamic": {"ran": report.ran, "probes": [p.to_json() for p in report.probes], "metrics": report.metrics},
        "advice": [a.to_json() for a in report.advice],
        "notes": list(report.notes),
        "modules": list(report.modules),
        "timings_s": {"static": round(report.static_seconds, 3), "dynamic": round(report.dynamic_seconds, 3)},
    }


def render_json(report: Report) -> str:
    return json.dumps(to_json(report), indent=2, ensure_ascii=False) + "\n"


def _handler_line(report: Report) -> str:
    h = report.handler
    if h is None:
        return "not found"
    names = " or ".join(f"`{name}(job)`" for name in h.name.split(" or "))
    return f"{names}, {h.kind}, `{h.file}:{h.line}`"


def _header(report: Report) -> list[str]:
    counts = ", ".join(f"{report.count(s)} {s.value}" for s in Severity)
    dynamic = f"run ({report.dynamic_seconds:.1f} s)" if report.ran else "not run (add `--run` to execute the module)"
    return [
        "# RunPod Serverless compliance review",
        "",
        "| | |",
        "|---|---|",
        f"| Handler module | `{report.target}` |",
        f"| Handler | {_handler_line(report)} |",
        f"| Static analysis | {len(report.modules)} project module(s), {report.static_seconds:.2f} s |",
        f"| Dynamic checks | {dynamic} |",
        f"| Findings | {counts} |",
        f"| **Score** | **{format_score(report.score)}/10: {report.verdict}** |",
        "",
    ]


def _compliant(report: Report) -> list[str]:
    lines = ["## Compliant", ""]
    passed = [item for item, ok, _ in report.checklist if ok]
    for item in passed:
        evidence = evidence_for(item, report.compliant)
        if evidence:
            for e in evidence:
                lines.append(f"- ✅ **{item}**: {e.detail} (`{e.file}:{e.line}`)")
        elif item not in DYNAMIC_CHECKLIST:  # dynamic items are shown by their probes below
            lines.append(f"- ✅ **{item}**: nothing fails it")
    for item, ok, failing in report.checklist:
        for e in evidence_for(item, report.compliant) if not ok and failing != ("not run",) else []:
            lines.append(
                f"- ✅ **{item}** (partly; see `{'`, `'.join(failing)}` below): {e.detail} (`{e.file}:{e.line}`)"
            )
    for probe in report.probes:
        if probe.passed:
            took = f", {probe.seconds:.2f} s" if probe.seconds is not None else ""
            lines.append(f"- ✅ **{probe.name}**: {probe.detail}{took}")
    if len(lines) == 2:
        lines.append("Nothing passes yet.")
    return lines + [""]


def _finding(number: int, f: Finding) -> list[str]:
    return [
        f"{number}. **{f.rule.title}** [`{f.rule_id}`] at `{f.where}`",
        f"   - Seen: {f.detail}",
        f"   - Fix: {f.rule.fix}",
    ]


def _problems(report: Report) -> list[str]:
    lines = ["## Problems to fix", ""]
    if not report.findings:
        lines += ["None.", ""]
    for severity in Severity:
        mine = [f for f in report.findings if f.severity is severity]
        if not mine:
            continue
        lines += [f"### {_SECTION[severity]}", ""]
        for n, f in enumerate(mine, start=1):
            lines += _finding(n, f)
        lines.append("")
    if report.suppressed:
        lines += ["Suppressed inline (`# fastbackend: ignore[...]`), not scored:", ""]
        lines += [f"- `{f.rule_id}` at `{f.where}`: {f.detail}" for f in report.suppressed]
        lines.append("")
    return lines


def _dynamic(report: Report) -> list[str]:
    if not report.ran:
        return []
    lines = ["## Dynamic checks", "", "| Check | Result | Time | Detail |", "|---|---|---|---|"]
    for p in report.probes:
        took = f"{p.seconds:.2f} s" if p.seconds is not None else "-"
        detail = p.detail.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {p.name} | {'✅ pass' if p.passed else '❌ fail'} | {took} | {detail} |")
    m = report.metrics
    if "cold_start_s" in m:
        warm = (
            f"; warm latency p50 {m['warm_p50_ms']:.1f} ms, max {m['warm_max_ms']:.1f} ms" if "warm_p50_ms" in m else ""
        )
        lines += [
            "",
            f"Cold start (spawn to first answer): {m['cold_start_s']:.2f} s "
            f"(server up {m.get('server_ready_s', 0):.2f} s, first job {m.get('first_job_ms', 0):.1f} ms){warm}.",
        ]
    return lines + [""]


def _recommendations(report: Report) -> list[str]:
    lines = ["## Prioritised recommendations", ""]
    n = 0
    for severity in Severity:
        ids = list(dict.fromkeys(f.rule_id for f in report.findings if f.severity is severity))
        for rule_id in ids:
            n += 1
            where = ", ".join(f"`{f.where}`" for f in report.findings if f.rule_id == rule_id)
            lines.append(f"{n}. **{_WHEN[severity]}**: {RULES[rule_id].fix} ({where})")
    if not n:
        lines.append("Nothing to fix before deployment.")
    # The review's future improvements: what is already there is not advice, so it is listed apart.
    present = [a for a in report.advice if a.present]
    missing = [a for a in report.advice if not a.present]
    if missing:
        lines += ["", "Future improvements (not scored):", ""]
        lines += [f"- **{a.topic}**: not found; {a.suggestion}." for a in missing]
    if present:
        lines += ["", "Already in place (the review's future improvements):", ""]
        lines += [f"- **{a.topic}**: `{a.where}`" for a in present]
    return lines + [""]


def _checklist(report: Report) -> list[str]:
    lines = ["## Pre-deployment checklist", ""]
    for item, passed, failing in report.checklist:
        suffix = (
            "" if passed else " (not run)" if failing == ("not run",) else f" ({', '.join(f'`{i}`' for i in failing)})"
        )
        lines.append(f"- [{'x' if passed else ' '}] {item}{suffix}")
    return lines + [""]


def _summary(report: Report) -> list[str]:
    lines = ["## Summary", "", "| Area | Status | Score | Findings |", "|---|---|---|---|"]
    for a in report.areas:
        ids = ", ".join(f"`{i}`" for i in a.rule_ids) or "-"
        lines.append(f"| {a.area.value} | {_ICON[a.status]} {a.status} | {a.score}/10 | {ids} |")
    counts = ", ".join(f"{report.count(s)} {s.value}" for s in Severity)
    lines.append(f"| **Overall** | **{report.verdict}** | **{format_score(report.score)}/10** | {counts} |")
    scale = ", ".join(
        f"{name} {AREA_SCORE[level]}"
        for name, level in (
            ("nothing failing", None),
            ("only low", Severity.LOW),
            ("high", Severity.HIGH),
            ("critical", Severity.CRITICAL),
        )
    )
    lines += [
        "",
        f"Area scores: {scale}; the score is their mean. The command exits non-zero when a critical "
        "item fails (`--strict`: when any item fails).",
    ]
    if report.notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in report.notes]
    return lines + [""]


def render_markdown(report: Report) -> str:
    """The review in the original's sections: compliant, problems, recommendations, checklist, summary."""
    parts = (
        _header(report)
        + _compliant(report)
        + _problems(report)
        + _dynamic(report)
        + _recommendations(report)
        + _checklist(report)
        + _summary(report)
    )
    return "\n".join(parts).rstrip() + "\n"
