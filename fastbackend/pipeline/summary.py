"""What a user reads at the end: the recorded metrics as a table (`runner.report` adds the failures).

One run gives a `metric | value` table; a sweep gives one column per point, with its status and
wall time first, so the points compare side by side.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastbackend.pipeline.definitions import Definitions
from fastbackend.tables import table

if TYPE_CHECKING:
    from fastbackend.pipeline.execute import RunResult


def format_value(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    return f"{value:.4g}"


def ranked(results: Sequence[RunResult], rank_by: str) -> list[RunResult]:
    """A sweep's points, highest `rank_by` first (points without it last, in their order)."""
    if not rank_by:
        return list(results)
    scored = [r for r in results if isinstance(r.metrics.get(rank_by), (int, float))]
    rest = [r for r in results if r not in scored]
    return sorted(scored, key=lambda r: -r.metrics[rank_by]) + rest


def best_line(results: Sequence[RunResult], rank_by: str) -> str:
    """`best: <point> (<metric> <value>)`, with the adapter it wrote when it recorded `adapter_dir`."""
    top = ranked(results, rank_by)[0] if rank_by else None
    if top is None or rank_by not in top.metrics:
        return ""
    where = top.metrics.get("adapter_dir") or top.run_dir
    return f"best: {top.label} ({rank_by} {format_value(top.metrics[rank_by])}): {where}"


def metrics_table(results: Sequence[RunResult], rank_by: str = "") -> str:
    """The recorded metrics of one run, or of every point of a sweep side by side (best first)."""
    results = ranked(results, rank_by)
    names = list(dict.fromkeys(name for r in results for name in r.metrics))
    if len(results) == 1:
        rows = [["metric", "value"]] + [[n, format_value(results[0].metrics[n])] for n in names]
        return table(rows) if names else "(no metrics recorded)"
    rows = [
        ["", *(r.label for r in results)],
        ["status", *(r.status for r in results)],
        ["seconds", *(f"{r.seconds:.1f}" if r.status != "skipped" else "-" for r in results)],
    ]
    rows += [[n, *(format_value(r.metrics[n]) if n in r.metrics else "-" for r in results)] for n in names]
    return table(rows)


def write_sweep_record(results: Sequence[RunResult], run_dir: Path, rank_by: str = "") -> None:
    """`sweep.json` (every point: values, status, folder, metrics) and `summary.txt` (the table, best first)."""
    points = [
        {
            "label": r.label,
            "sweep_point": r.point,
            "status": r.status,
            "seconds": round(r.seconds, 2),
            "run_dir": r.run_dir.name,
            "metrics": r.metrics,
        }
        for r in results
    ]
    (run_dir / "sweep.json").write_text(
        json.dumps({"pipeline": results[0].pipeline, "runs": points}, indent=2, default=str) + "\n"
    )
    best = best_line(results, rank_by)
    (run_dir / "summary.txt").write_text(metrics_table(results, rank_by) + "\n" + (f"\n{best}\n" if best else ""))


def _literal(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


def pipeline_list(definitions: Definitions) -> str:
    """`pipeline list`: each pipeline, its steps and what it is for."""
    rows = [["pipeline", "steps", "description"]]
    rows += [[p.name, " -> ".join(s.name for s in p.steps), p.description] for p in definitions.pipelines.values()]
    return table(rows)


def pipeline_help(definitions: Definitions, name: str) -> str:
    """`pipeline show NAME`: every step's parameters with type, value in this pipeline and origin.

    Raises:
        DefinitionError: unknown pipeline, a missing notebook, not exactly one parameters cell.
    """
    from fastbackend.pipeline.params import inspect_parameters

    pipeline = definitions.get(name)
    lines = [f"{pipeline.name}: {pipeline.description}" if pipeline.description else pipeline.name]
    for number, step in enumerate(pipeline.steps, start=1):
        declared = inspect_parameters(definitions.root / step.notebook, step.notebook)
        lines += ["", f"step {number}/{len(pipeline.steps)}: {step.name} ({step.notebook})"]
        rows = [["parameter", "type", "default", "set by", "help"]]
        for p in declared:
            if p.name in step.parameters:
                value, origin = _literal(step.parameters[p.name]), "pipeline step"
            elif p.name in pipeline.parameters:
                value, origin = _literal(pipeline.parameters[p.name]), "pipeline"
            else:
                value, origin = p.default_source, "notebook"
            rows.append([p.name, str(p.type), value, origin, p.help])
        if not any(row[4] for row in rows[1:]):
            rows = [row[:4] for row in rows]
        lines += ["  " + line for line in table(rows).splitlines()] if declared else ["  (no parameters)"]
    lines += [
        "",
        "Set with -p name=value (every step declaring it) or -p step.name=value; "
        "a,b,c sweeps; ${run_dir} is the run's folder.",
    ]
    return "\n".join(lines)
