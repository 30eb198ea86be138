"""`fastbackend run`: the main job README's first command runs.

Builds the embedded default models if they are missing, executes the notebooks with the
pipeline runner (pipelines.yaml) into run folders, and prints what a user wants to see first:
how well the base and each adapter do.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

DEMO_NOTEBOOK = "notebooks/00_demo_models.ipynb"
STEP_NOTEBOOKS = ("notebooks/01_preprocess.ipynb", "notebooks/02_inference.ipynb")
PIPELINES_FILE = "pipelines.yaml"


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
    """Build the models if missing (pipeline `demo-models`), evaluate every adapter (pipeline
    `evaluate`), print the accuracy table. Each pipeline leaves its own run folder in runs/.

    Raises:
        PipelineError: a pipeline was refused or a notebook step failed (StepFailed names the cell).
    """
    from worker.dev.pipeline.runner import run_pipeline

    started = time.perf_counter()
    pipelines = root / PIPELINES_FILE
    if rebuild or not models_present(models_dir):
        print(f"building the embedded default models into {models_dir} ...", flush=True)
        built = run_pipeline("demo-models", pipelines_file=pipelines, parameters={"output_dir": str(models_dir)})
        built.raise_for_failure()
        print(f"  built in {built.results[0].metrics.get('build_seconds', '?')} s")
    params = {"model_dir": str(models_dir / "base"), "adapters_dir": str(models_dir / "adapters"), "adapter": ""}
    run = run_pipeline("evaluate", pipelines_file=pipelines, parameters=params)
    run.raise_for_failure()
    metrics: dict[str, Any] = run.results[0].metrics
    print()
    print(accuracy_table(metrics))
    print(f"\ndone in {time.perf_counter() - started:.0f} s; executed notebooks and figures in {run.run_dir.relative_to(root)}")
    return 0
