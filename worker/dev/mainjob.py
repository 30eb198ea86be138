"""`fastbackend run`: the main job README's first command runs.

Builds the embedded default models if they are missing, executes the notebooks with
papermill into a run folder, and prints what a user wants to see first: how well the base
and each adapter do.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

DEMO_NOTEBOOK = "notebooks/00_demo_models.ipynb"
STEP_NOTEBOOKS = ("notebooks/01_preprocess.ipynb", "notebooks/02_inference.ipynb")


def models_present(models_dir: Path) -> bool:
    adapters = models_dir / "adapters"
    return (models_dir / "base" / "model.safetensors").is_file() and adapters.is_dir() and any(
        (a / "adapter_model.safetensors").is_file() for a in adapters.iterdir()
    )


def new_run_dir(root: Path, name: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    run_dir = root / "runs" / f"{stamp}-{name}"
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = root / "runs" / f"{stamp}-{name}-{suffix}"
    run_dir.mkdir(parents=True)
    return run_dir


def accuracy_table(metrics: dict[str, Any]) -> str:
    """The summary: base on digits, then each adapter's task without and with the adapter."""
    rows = [("task", "base model", "with adapter")]
    if "base_accuracy" in metrics:
        rows.append(("digits", f"{metrics['base_accuracy']:.1%}", "-"))
    tasks = sorted({k.split("/")[0] for k in metrics if k.endswith("/adapter_accuracy")})
    for task in tasks:
        rows.append((task, f"{metrics[f'{task}/base_accuracy']:.1%}", f"{metrics[f'{task}/adapter_accuracy']:.1%}"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main_job(root: Path, models_dir: Path, rebuild: bool = False) -> int:
    from worker.dev.notebooks import execute, write_metrics

    started = time.perf_counter()
    run_dir = new_run_dir(root, "run")
    print(f"run folder: {run_dir.relative_to(root)}")
    if rebuild or not models_present(models_dir):
        print(f"building the embedded default models into {models_dir} ...", flush=True)
        built = execute(root / DEMO_NOTEBOOK, run_dir / Path(DEMO_NOTEBOOK).name,
                        {"output_dir": str(models_dir)}, cwd=root)
        print(f"  built in {built.metrics.get('build_seconds', '?')} s")
    metrics: dict[str, Any] = {}
    params = {"model_dir": str(models_dir / "base"), "adapters_dir": str(models_dir / "adapters")}
    for notebook in STEP_NOTEBOOKS:
        print(f"executing {notebook} ...", flush=True)
        wanted = {k: v for k, v in params.items() if k != "adapters_dir" or "inference" in notebook}
        metrics.update(execute(root / notebook, run_dir / Path(notebook).name, wanted, cwd=root).metrics)
    write_metrics(run_dir / "metrics.json", metrics)
    print()
    print(accuracy_table(metrics))
    print(f"\ndone in {time.perf_counter() - started:.0f} s; executed notebooks and figures in {run_dir.relative_to(root)}")
    return 0
