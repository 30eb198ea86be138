"""The pipeline runner's errors: one base class, structured fields, one readable message each.

Two kinds, kept apart because the CLI answers them differently: a pipeline that cannot start
(a bad definition or bad parameters; nothing was executed, exit 2) and a step that failed while
running (a partial notebook exists, exit 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class PipelineError(Exception):
    """Base of every error the pipeline runner raises on purpose."""

    exit_code = 2


class DefinitionError(PipelineError):
    """pipelines.yaml (or a params file) is malformed, or names something that does not exist."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source
        self.message = message


@dataclass(frozen=True)
class Problem:
    """One refused parameter: its name, the notebook it was checked against, and why."""

    parameter: str
    notebook: str
    message: str

    def __str__(self) -> str:
        return f"{self.parameter}: {self.message} ({self.notebook})"


class ParameterError(PipelineError):
    """Parameters refused before any kernel started; every problem found is listed at once."""

    def __init__(self, pipeline: str, problems: tuple[Problem, ...] | list[Problem]) -> None:
        self.pipeline = pipeline
        self.problems = tuple(problems)
        lines = [f"pipeline {pipeline!r}: {len(self.problems)} parameter problem(s), nothing was run"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Failure:
    """Where and how a step failed; plain data, so it crosses process boundaries in sweeps."""

    pipeline: str
    step: str
    step_number: int  # 1-based, of n_steps
    n_steps: int
    notebook: str  # the source notebook, as written in pipelines.yaml
    partial: Path  # the executed notebook as far as it got
    ename: str
    evalue: str
    cell_index: int | None = None  # 0-based index in the source notebook (nbformat's, papermill's)
    exec_count: int | None = None  # the In [N] shown in the partial notebook
    cell_line: str = ""  # the cell's frame of the traceback ("Cell In[4], line 2 ...")

    def describe(self) -> str:
        """A few lines a person can act on: step, notebook, cell, exception, partial notebook."""
        where = f"cell {self.cell_index}" if self.cell_index is not None else "an unknown cell"
        if self.exec_count is not None:
            where += f" (In [{self.exec_count}])"
        lines = [
            f"pipeline {self.pipeline!r} failed at step {self.step_number}/{self.n_steps} "
            f"{self.step!r}: {self.notebook}, {where}",
            f"  {self.ename}: {self.evalue}" if self.evalue else f"  {self.ename}",
        ]
        if self.cell_line:
            lines += [f"  | {line}" for line in self.cell_line.splitlines() if line.strip()]
        lines.append(f"  partial notebook: {self.partial}")
        return "\n".join(lines)


class StepFailed(PipelineError):
    """A notebook step raised; the partial executed notebook is kept at `failure.partial`."""

    exit_code = 1

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.describe())
        self.failure = failure

    def __reduce__(self):  # picklable with its structured field (sweeps run in processes)
        return (type(self), (self.failure,))
