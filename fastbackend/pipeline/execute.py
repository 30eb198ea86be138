"""Executing one planned run: its steps with papermill, into its run folder, with records.

The run folder holds `parameters.yaml` (written before the first kernel starts), each executed
notebook and its figures as PNG, `metrics.json` (everything the notebooks `record()`ed, a later
step winning on a name both record) and `run.json` (status, timings, per-step metrics, the
failure if any, git commit). A failing step stops the run; its partial notebook is kept and its
metrics so far are recorded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nbformat
import yaml
from papermill.exceptions import PapermillExecutionError, strip_color

from fastbackend.notebooks import run_notebook, save_figures, write_metrics
from fastbackend.pipeline.errors import Failure
from fastbackend.pipeline.plan import PlannedStep, RunPlan
from fastbackend.record import metrics_from_notebook

# Cells papermill adds to an executed notebook that the source notebook does not have.
_ADDED_TAGS = {"injected-parameters", "papermill-error-cell-tag"}


@dataclass(frozen=True)
class ProgressEvent:
    """What a running pipeline reports: a cell started, or a step finished (with its status)."""

    kind: str  # "cell" or "step"
    run: int  # index of the run in this invocation
    step: int  # 0-based
    cell: int = 0  # 0-based, in the executed notebook
    n_cells: int = 0
    status: str = ""
    seconds: float = 0.0


Progress = Callable[[ProgressEvent], None]


@dataclass(frozen=True)
class StepResult:
    name: str
    notebook: str
    output: str  # file name in the run folder
    status: str  # "ok", "failed", "interrupted"
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)
    figures: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunResult:
    """The outcome of one run; plain data, returned across processes in a parallel sweep."""

    pipeline: str
    label: str
    point: dict[str, Any]
    run_dir: Path
    status: str  # "ok", "failed", "interrupted"
    seconds: float
    metrics: dict[str, Any]
    steps: tuple[StepResult, ...]
    failure: Failure | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _cell_frame(traceback: list[str]) -> str:
    """The traceback entry inside the notebook cell ('Cell In[4], line 2 ...'), if any."""
    for entry in traceback:
        text = strip_color(entry).strip("\n")
        if text.startswith("Cell In["):
            return "\n".join(text.splitlines()[:8])
    return ""


def _failed_cell(partial: nbformat.NotebookNode) -> tuple[int | None, int | None, list[str]]:
    """(index in the source notebook, execution count, traceback) of the cell that failed."""
    cells = [c for c in partial.cells if not _ADDED_TAGS & set(c.metadata.get("tags", []))]
    running = None
    for index, cell in enumerate(cells):
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        state = cell.metadata.get("papermill", {})
        if errors or state.get("exception"):
            return index, cell.get("execution_count"), errors[0].get("traceback", []) if errors else []
        if state.get("status") == "running":
            running = (index, cell.get("execution_count"), [])
    return running or (None, None, [])


def _failure(plan: RunPlan, number: int, step: PlannedStep, exc: BaseException) -> Failure:
    partial = plan.run_dir / step.output
    index = count = None
    traceback: list[str] = []
    if partial.is_file():
        index, count, traceback = _failed_cell(nbformat.read(partial, as_version=4))
    if isinstance(exc, PapermillExecutionError):
        ename, evalue, traceback = exc.ename, exc.evalue, exc.traceback or traceback
    else:  # a dead kernel, a timeout, Ctrl-C: papermill raises these as they are
        ename, evalue = type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return Failure(
        plan.pipeline,
        step.name,
        number,
        len(plan.steps),
        step.notebook,
        partial,
        ename,
        evalue,
        index,
        count,
        _cell_frame(traceback),
    )


def _read_back(path: Path) -> tuple[dict[str, Any], tuple[str, ...]]:
    if not path.is_file():
        return {}, ()
    nb = nbformat.read(path, as_version=4)
    return metrics_from_notebook(nb), tuple(p.name for p in save_figures(nb, path))


def write_parameters(plan: RunPlan) -> None:
    """`parameters.yaml`: every parameter of every step; `injected` names those that were set."""
    record = {"pipeline": plan.pipeline}
    if plan.point:
        record["sweep_point"] = plan.point
    record["steps"] = {
        s.name: {"notebook": s.notebook, "parameters": s.parameters, "injected": sorted(s.injected)} for s in plan.steps
    }
    header = (
        "# The parameters of this run, step by step: every parameter each notebook declares.\n"
        "# `injected` lists those set by pipelines.yaml or the command line; the rest are the\n"
        "# notebook's own defaults.\n"
    )
    (plan.run_dir / "parameters.yaml").write_text(header + yaml.safe_dump(record, sort_keys=False, allow_unicode=True))


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _write_run_json(plan: RunPlan, result: RunResult, started: float, context: dict[str, Any]) -> None:
    body = {
        "pipeline": plan.pipeline,
        "label": plan.label,
        "sweep_point": plan.point,
        "status": result.status,
        "started": _utc(started),
        "seconds": round(result.seconds, 2),
        **context,
        "steps": [asdict(s) for s in result.steps],
        "failure": {**asdict(result.failure), "partial": str(result.failure.partial)} if result.failure else None,
    }
    (plan.run_dir / "run.json").write_text(json.dumps(body, indent=2, default=str) + "\n")


def run_plan(
    plan: RunPlan, index: int = 0, on_progress: Progress | None = None, context: dict[str, Any] | None = None
) -> RunResult:
    """Execute a planned run's steps in order into its (existing, empty) run folder.

    Args:
        plan: from `plan_runs`; its parameters are already checked.
        index: this run's position in the invocation, echoed in progress events.
        on_progress: called when a cell starts and when a step ends.
        context: extra facts for run.json (command line, git commit).

    Returns:
        The RunResult; a failed step gives status "failed" and `failure` (nothing is raised).

    Raises:
        KeyboardInterrupt: after recording the run as "interrupted".
    """
    started = time.time()
    write_parameters(plan)
    steps: list[StepResult] = []
    metrics: dict[str, Any] = {}
    failure, status = None, "ok"
    interrupted: KeyboardInterrupt | None = None
    for number, step in enumerate(plan.steps):
        output = plan.run_dir / step.output
        step_started = time.perf_counter()

        def on_cell(cell: int, n_cells: int, _number: int = number) -> None:
            if on_progress:
                on_progress(ProgressEvent("cell", index, _number, cell, n_cells))

        try:
            run_notebook(step.source, output, step.injected, plan.root, on_cell)
            step_status = "ok"
        except (Exception, KeyboardInterrupt) as exc:  # papermill's, nbclient's and the kernel's, all recorded
            step_status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            failure, status = _failure(plan, number + 1, step, exc), step_status
            interrupted = exc if isinstance(exc, KeyboardInterrupt) else None
        step_metrics, figures = _read_back(output)
        metrics.update(step_metrics)
        seconds = time.perf_counter() - step_started
        steps.append(
            StepResult(step.name, step.notebook, step.output, step_status, round(seconds, 2), step_metrics, figures)
        )
        if on_progress:
            on_progress(ProgressEvent("step", index, number, status=step_status, seconds=seconds))
        if failure:
            break
    result = RunResult(
        plan.pipeline,
        plan.label,
        plan.point,
        plan.run_dir,
        status,
        time.time() - started,
        metrics,
        tuple(steps),
        failure,
    )
    write_metrics(plan.run_dir / "metrics.json", metrics)
    _write_run_json(plan, result, started, context or {})
    if interrupted is not None:
        raise interrupted
    return result
