"""The review end to end (`review`), and what the CLI prints and exits with (`run_command`)."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastbackend.check.analysis import suppressed
from fastbackend.check.checklist import Severity
from fastbackend.check.checks_start import find_test_input, load_test_job, test_input_candidates
from fastbackend.check.model import CheckError, Report
from fastbackend.check.render import render_json, render_markdown
from fastbackend.check.scoring import checklist, overall, score_areas, verdict
from fastbackend.check.source import display_path, load_project
from fastbackend.check.static import analyse

_SEVERITY_ORDER = {s: i for i, s in enumerate(Severity)}


@dataclass(frozen=True)
class CheckOptions:
    """Everything `fastbackend check` was asked to do."""

    path: Path
    run: bool = False
    input: str | None = None  # a test job as JSON, or a path to one (default: test_input.json beside the handler)
    json: bool = False
    strict: bool = False
    output: Path | None = None
    summary: bool = False
    timeout_s: float = 180.0
    max_cold_start_s: float = 60.0
    python: str = sys.executable


def load_job(spec: str | None, handler_path: Path) -> tuple[dict[str, Any], str]:
    """The test job for --run and where it came from.

    Raises:
        CheckError: `spec` is not JSON or not a job, or no test job exists.
    """
    if spec is not None:
        if spec.lstrip().startswith("{"):
            try:
                job = json.loads(spec)
            except json.JSONDecodeError as exc:
                raise CheckError(f"--input is not JSON: {exc.msg} (column {exc.colno})") from None
            source = "--input"
        else:
            path = Path(spec)
            if not path.is_file():
                raise CheckError(f"--input {spec}: no such file (pass JSON or a path to a JSON file)")
            job, line, error = load_test_job(path)
            if job is None:
                raise CheckError(f"{spec}:{line}: {error}")
            source = display_path(path)
        if not isinstance(job, dict) or "input" not in job:
            raise CheckError('--input must be a job: a JSON object with an "input" key')
        return job, source
    path = find_test_input(handler_path)
    if path is None:
        names = " or ".join(p.name for p in test_input_candidates(handler_path)[:2])
        raise CheckError(
            f"--run needs a test job: add {names} beside {handler_path.name}, or pass --input '{{\"input\": {{...}}}}'"
        )
    job, line, error = load_test_job(path)
    if job is None:
        raise CheckError(f"{display_path(path)}:{line}: {error}")
    return job, display_path(path)


def review(options: CheckOptions) -> Report:
    """Write the review of one handler module (static, plus dynamic with `options.run`).

    Args:
        options: the path and what to do; see CheckOptions.

    Returns:
        The finished Report; `report.exit_code(strict)` is the command's exit status.

    Raises:
        CheckError: the handler is missing or unparseable, the file holds no handler at all, or --run
            has no usable test job.
    """
    started = time.perf_counter()
    project = load_project(options.path)
    static = analyse(project)
    if static.handler is None and not static.entry.starts:
        # Nothing here is a RunPod worker (a config file, a library module): a score would mislead.
        raise CheckError(
            f"{display_path(options.path)}: no RunPod handler here (no `handler` function and no "
            "`runpod.serverless.start(...)`); pass the worker's handler module"
        )
    static_seconds = time.perf_counter() - started
    findings, dropped = list(static.findings), list(static.suppressed)
    probes, metrics, dynamic_seconds = (), {}, 0.0
    if options.run:
        from fastbackend.check.dynamic import RunOptions, run_dynamic

        job, source = load_job(options.input, options.path)
        h = static.handler
        anchor = (h.file, h.line) if h else (display_path(options.path), 1)
        result = run_dynamic(
            options.path,
            RunOptions(job, source, options.python, options.timeout_s, options.max_cold_start_s),
            anchor,
            generator=bool(h and h.kind.endswith("generator")),
        )
        known = {f.rule_id for f in findings}
        for finding in result.findings:
            if finding.rule_id in known and not finding.rule_id.startswith("run-"):
                continue  # the dynamic run confirms a static finding; the probe table shows it
            (dropped if suppressed(project, finding) else findings).append(finding)
        probes, metrics, dynamic_seconds = tuple(result.probes), result.metrics, result.seconds
    ordered = tuple(sorted(findings, key=lambda f: (_SEVERITY_ORDER[f.severity], f.file, f.line)))
    areas = score_areas(ordered)
    return Report(
        target=display_path(options.path),
        handler=static.handler,
        modules=static.modules,
        findings=ordered,
        suppressed=tuple(dropped),
        compliant=static.compliant,
        checklist=checklist(ordered, probes, options.run),
        areas=areas,
        score=overall(areas, verdict(ordered)),
        verdict=verdict(ordered),
        advice=static.advice,
        probes=probes,
        metrics=metrics,
        notes=static.notes,
        ran=options.run,
        static_seconds=static_seconds,
        dynamic_seconds=dynamic_seconds,
    )


def run_command(options: CheckOptions) -> int:
    """Print (or write) the review; return the exit status: 0 pass, 1 failed items, 2 cannot review."""
    try:
        report = review(options)
    except CheckError as exc:
        print(f"fastbackend check: {exc}", file=sys.stderr)
        return 2
    except RecursionError:  # the analysis of a pathologically nested module: cannot review, one line
        print(f"fastbackend check: {options.path}: nested too deeply to analyse", file=sys.stderr)
        return 2
    text = render_json(report) if options.json else render_markdown(report)
    if options.output is not None:
        options.output.parent.mkdir(parents=True, exist_ok=True)
        options.output.write_text(text, encoding="utf-8")
        print(f"{report.summary_line()}; report in {options.output}")
    elif options.summary:
        print(report.summary_line())
    else:
        sys.stdout.write(text)
    return report.exit_code(options.strict)
