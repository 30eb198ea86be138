"""`run_pipeline`: definitions -> checked plans -> run folder -> runs -> records.

Everything that can be refused is refused before the run folder exists or a kernel starts.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastbackend.pipeline.definitions import DEFAULT_FILE, load_definitions
from fastbackend.pipeline.errors import PipelineError, StepFailed
from fastbackend.pipeline.execute import RunResult
from fastbackend.pipeline.plan import Override, load_params_file, parse_assignment, plan_runs
from fastbackend.pipeline.summary import best_line, metrics_table, write_sweep_record


@dataclass(frozen=True)
class PipelineRun:
    """What one `pipeline run` produced: its folder and one result per run (several in a sweep)."""

    pipeline: str
    run_dir: Path
    root: Path
    results: tuple[RunResult, ...]
    seconds: float
    rank_by: str = ""  # the pipeline's ranking metric (a sweep's summary lists the best first)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def sweep(self) -> bool:
        return len(self.results) > 1 or bool(self.results[0].label)

    def raise_for_failure(self) -> None:
        """Raise StepFailed for the first failed run, if any."""
        for result in self.results:
            if result.failure:
                raise StepFailed(result.failure)


def _git(root: Path) -> dict[str, Any]:
    """The commit the notebooks ran at, and whether the work tree had changes."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}
    if commit.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def _refuse_stale_export(root: Path) -> None:
    """A pipeline runs the exported code: with a notebook edited and not exported, it would
    silently run the old code (issue 31.4)."""
    from fastbackend.export import ExportError, stale_sources

    try:
        stale = stale_sources(root)
    except ExportError as exc:
        raise PipelineError(f"cannot check exported/: {exc}") from None
    if stale:
        raise PipelineError(
            f"exported/ is stale: {', '.join(stale)} changed since the last export; the pipeline would run "
            "the old code. Run `fastbackend export` first"
        )


def allocate_run_dir(runs_dir: Path, name: str) -> Path:
    """Create `runs/<utc-time>-<name>/`, with a numeric suffix if another run took that second."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    runs_dir.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        path = runs_dir / (f"{stamp}-{name}" if n == 1 else f"{stamp}-{name}-{n}")
        try:
            path.mkdir()  # exclusive: two invocations in the same second get different folders
            return path
        except FileExistsError:
            continue
    raise PipelineError(f"{runs_dir}: no free run folder name for {stamp}-{name}")


def run_pipeline(
    name: str,
    *,
    pipelines_file: Path | str = DEFAULT_FILE,
    parameters: dict[str, Any] | None = None,
    assignments: Sequence[str] = (),
    params_files: Sequence[Path | str] = (),
    jobs: int = 1,
    runs_dir: Path | None = None,
    progress: bool | None = None,
    fail_fast: bool = False,
    command: Sequence[str] | None = None,
) -> PipelineRun:
    """Run a pipeline (or a sweep of it) into `runs/<utc-time>-<name>/`.

    Args:
        name: a pipeline of the definitions file.
        pipelines_file: the definitions; its folder is the kernels' working directory.
        parameters: typed values, as a params file would give them (`step.name` keys allowed).
        assignments: `key=value` texts, as `-p` gives them; they win over `parameters`, which
            win over `params_files` (in order, later files winning).
        params_files: YAML files of `name: value`.
        jobs: runs of a sweep executed at once, each in its own process.
        runs_dir: where run folders go (default: `runs/` beside the definitions file).
        progress: show the progress bar (default: when stderr is a terminal); step lines always print.
        fail_fast: in a sweep, start no further run after one fails.
        command: the command line, recorded in run.json.

    Returns:
        The PipelineRun; check `.ok` (or call `.raise_for_failure()`): a failed step is recorded,
        not raised, so that the other points of a sweep still run and report.

    Raises:
        DefinitionError, ParameterError: nothing was run and no run folder was left behind.
        KeyboardInterrupt: after the interrupted run was recorded.
    """
    from fastbackend.pipeline.progress import ProgressDisplay
    from fastbackend.pipeline.sweep import run_all

    started = time.perf_counter()
    definitions = load_definitions(Path(pipelines_file))
    definitions.get(name)
    overrides: list[Override] = [o for f in params_files for o in load_params_file(Path(f))]
    overrides += [Override(k, v, "parameters") for k, v in (parameters or {}).items()]
    overrides += [parse_assignment(a) for a in assignments]
    if jobs < 1:
        raise PipelineError(f"--jobs must be at least 1, got {jobs}")
    _refuse_stale_export(definitions.root)
    run_dir = allocate_run_dir(Path(runs_dir) if runs_dir else definitions.root / "runs", name)
    try:
        plans = plan_runs(definitions, name, overrides, run_dir)
    except PipelineError:
        run_dir.rmdir()
        raise
    context = {"command": list(command) if command else None, "git": _git(definitions.root)}
    display = ProgressDisplay(plans, progress)
    try:
        results = run_all(plans, jobs, display, fail_fast, context)
    finally:
        display.close()
    rank_by = definitions.get(name).rank_by
    run = PipelineRun(name, run_dir, definitions.root, tuple(results), time.perf_counter() - started, rank_by)
    if run.sweep:
        write_sweep_record(results, run_dir, rank_by)
    return run


def report(run: PipelineRun) -> str:
    """The full end-of-invocation text: headline, metrics table, then each failure."""

    def shown(path: Path) -> Path:
        return path.relative_to(run.root) if path.is_relative_to(run.root) else path

    results = run.results
    if not run.sweep:
        head = f"pipeline {run.pipeline}: {results[0].status} in {run.seconds:.1f} s; run folder {shown(run.run_dir)}"
    else:
        ok = sum(r.ok for r in results)
        head = (
            f"pipeline {run.pipeline}: sweep of {len(results)} runs, {ok} ok, in {run.seconds:.1f} s; "
            f"folder {shown(run.run_dir)}"
        )
    parts = [head, "", metrics_table(results, run.rank_by)]
    if run.sweep and (best := best_line(results, run.rank_by)):
        parts += ["", best]
    for r in results:
        if r.failure:
            text = r.failure.describe().replace(str(r.failure.partial), str(shown(r.failure.partial)))
            parts += ["", f"[{r.label}] {text}" if r.label else text]
    return "\n".join(parts)
