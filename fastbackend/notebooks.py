"""Executing notebooks with papermill, and keeping committed notebooks free of volatile metadata."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastbackend.record import metrics_from_notebook

# Notebook- and cell-level metadata that changes on every run and must not be committed.
VOLATILE_NOTEBOOK_KEYS = ("papermill", "widgets", "execution")
VOLATILE_CELL_KEYS = ("papermill", "execution", "ExecuteTime", "collapsed", "scrolled")
KERNEL_NAME = "python3"


@dataclass(frozen=True)
class ExecutedNotebook:
    source: Path
    output: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    figures: tuple[Path, ...] = ()


def run_notebook(
    source: Path,
    output: Path,
    parameters: dict[str, Any] | None = None,
    cwd: Path | None = None,
    on_cell: Callable[[int, int], None] | None = None,
) -> None:
    """The one way the tools execute a notebook: papermill, our kernel and its arguments, quiet.

    Args:
        source: the notebook; output: where the executed copy goes (written even on failure).
        parameters: injected after the `parameters` cell.
        cwd: the kernel's working directory (default: the current one).
        on_cell: called with (cell index, number of cells) as each cell starts.

    Raises:
        papermill.PapermillExecutionError: a cell failed (the partial notebook is at `output`).
    """
    import papermill

    from fastbackend.kernel import ENGINE, KERNEL_ARGUMENTS

    output.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(source),
        str(output),
        parameters=parameters or {},
        cwd=str(cwd or Path.cwd()),
        kernel_name=KERNEL_NAME,
        engine_name=ENGINE,
        progress_bar=False,
        log_output=False,
        on_cell=on_cell,
        extra_arguments=list(KERNEL_ARGUMENTS),
    )


def execute(
    source: Path,
    output: Path,
    parameters: dict[str, Any] | None = None,
    cwd: Path | None = None,
    figures: bool = True,
) -> ExecutedNotebook:
    """Run one notebook (`run_notebook`); read back its metrics and save its figures as PNG beside it.

    Raises:
        papermill.PapermillExecutionError: a cell failed (the partial notebook is at `output`).
    """
    import nbformat

    run_notebook(source, output, parameters, cwd)
    nb = nbformat.read(output, as_version=4)
    return ExecutedNotebook(source, output, metrics_from_notebook(nb), save_figures(nb, output) if figures else ())


def save_figures(nb: Any, output: Path) -> tuple[Path, ...]:
    """Write every image/png output of an executed notebook as `<stem>-fig<N>.png`."""
    saved = []
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            png = out.get("data", {}).get("image/png")
            if png:
                path = output.with_name(f"{output.stem}-fig{len(saved) + 1}.png")
                path.write_bytes(base64.b64decode(png))
                saved.append(path)
    return tuple(saved)


def clean(nb: Any) -> Any:
    """Strip volatile metadata in place (outputs and execution counts are kept)."""
    for key in VOLATILE_NOTEBOOK_KEYS:
        nb.metadata.pop(key, None)
    for cell in nb.cells:
        for key in VOLATILE_CELL_KEYS:
            cell.metadata.pop(key, None)
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if out.get("name") == "stderr":
                # Library warnings carry absolute paths of this machine.
                out["text"] = re.sub(r"/\S*/site-packages/", "<site-packages>/", out.get("text", ""))
    return nb


def volatile_metadata(nb: Any) -> list[str]:
    """Which volatile keys a notebook still carries (empty when clean)."""
    found = [f"metadata.{k}" for k in VOLATILE_NOTEBOOK_KEYS if k in nb.metadata]
    for i, cell in enumerate(nb.cells):
        found += [f"cell {i} metadata.{k}" for k in VOLATILE_CELL_KEYS if k in cell.metadata]
    return found


class RefreshFailed(Exception):
    """A notebook failed to re-execute; it was left as it was. The message is one line."""


def refresh(notebooks: list[Path], root: Path) -> None:
    """Re-execute notebooks with their default parameters, clean them, and replace each only
    when it ran to the end: the run goes to a temporary copy beside it, so a failing cell never
    leaves a half-executed notebook (papermill's error cell) in place of the committed one.

    Raises:
        RefreshFailed: a cell failed (naming the notebook and the cell); that notebook and the
            ones after it are untouched.
    """
    import os
    import tempfile

    import nbformat
    from papermill.exceptions import PapermillExecutionError

    for path in notebooks:
        fd, name = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".ipynb", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        try:
            run_notebook(path, tmp, cwd=root)
            nb = nbformat.read(tmp, as_version=4)
            nbformat.write(clean(nb), tmp)
            os.replace(tmp, path)
        except PapermillExecutionError as exc:
            cell = f"cell {exc.exec_count}" if exc.exec_count else f"cell index {exc.cell_index}"
            message = f"{path}: {cell} failed: {exc.ename}: {exc.evalue}; the notebook is unchanged"
            raise RefreshFailed(message) from None
        finally:
            tmp.unlink(missing_ok=True)


def write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
