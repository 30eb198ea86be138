"""`fastbackend run`: the main job README's first command runs (`make run`).

Builds the embedded default models if they are missing, executes the notebooks with the
pipeline runner (pipelines.yaml) into run folders, and prints what a user wants to see first:
how well the base and each adapter do.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastbackend.tables import table

DEMO_NOTEBOOK = "notebooks/00_demo_models.ipynb"
PIPELINES_FILE = "pipelines.yaml"


def models_present(models_dir: Path) -> bool:
    adapters = models_dir / "adapters"
    return (
        (models_dir / "base" / "model.safetensors").is_file()
        and adapters.is_dir()
        and any((a / "adapter_model.safetensors").is_file() for a in adapters.iterdir())
    )


def accuracy_table(metrics: dict[str, Any]) -> str:
    """The summary: base on digits, then each adapter's task without and with the adapter."""
    rows = [("task", "base model", "with adapter")]
    if "base_accuracy" in metrics:
        rows.append(("digits", f"{metrics['base_accuracy']:.1%}", "-"))
    tasks = sorted({k.split("/")[0] for k in metrics if k.endswith("/adapter_accuracy")})
    for task in tasks:
        rows.append((task, f"{metrics[f'{task}/base_accuracy']:.1%}", f"{metrics[f'{task}/adapter_accuracy']:.1%}"))
    return table(rows)


def main_job(root: Path, models_dir: Path, rebuild: bool = False) -> int:
    """Build the models if missing (pipeline `demo-models`), evaluate every adapter (pipeline
    `evaluate`), print the accuracy table. Each pipeline leaves its own run folder in runs/.

    Raises:
        PipelineError: a pipeline was refused or a notebook step failed (StepFailed names the cell).
    """
    from fastbackend.pipeline.runner import run_pipeline

    started = time.perf_counter()
    pipelines = root / PIPELINES_FILE
    if not rebuild and not models_present(models_dir) and models_dir.is_dir() and any(models_dir.iterdir()):
        # The build starts by deleting <models>/base: never do that to a folder we did not make.
        raise SystemExit(
            f"{models_dir} exists but holds no complete demo model set (base/model.safetensors and an adapter); "
            "move it away, or pass --rebuild to replace it with the demo models"
        )
    if rebuild or not models_present(models_dir):
        print(f"building the embedded default models into {models_dir} ...", flush=True)
        built = run_pipeline("demo-models", pipelines_file=pipelines, parameters={"output_dir": str(models_dir)})
        built.raise_for_failure()
        print(f"  built in {built.results[0].metrics.get('build_seconds', '?')} s")
    params = {"base_model": str(models_dir / "base"), "adapters_dir": str(models_dir / "adapters"), "adapter": ""}
    run = run_pipeline("evaluate", pipelines_file=pipelines, parameters=params)
    run.raise_for_failure()
    metrics: dict[str, Any] = run.results[0].metrics
    print()
    print(accuracy_table(metrics))
    print()
    serve_steps(root, models_dir, run.run_dir)
    print_check_summary(root, run.run_dir)
    print(
        f"\ndone in {time.perf_counter() - started:.0f} s; "
        f"executed notebooks and figures in {run.run_dir.relative_to(root)}"
    )
    return 0


def _digit_png(task: str, index: int) -> tuple[str, int]:
    """A held-out digit of a task as base64 PNG, with its true label."""
    import base64
    import io

    from PIL import Image

    from exported.demo_models import load_digit_task

    images, labels = load_digit_task(task, "test")
    buffer = io.BytesIO()
    Image.fromarray(images[index]).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii"), int(labels[index])


def _shown(output: dict[str, Any] | None) -> str:
    if not output or "predictions" not in output:
        return f"no prediction ({output})"
    first = output["predictions"][0]
    return f"{first['label']} (score {first['score']:.3f}, adapter {output.get('adapter')})"


def serve_steps(root: Path, models_dir: Path, run_dir: Path) -> None:
    """Export, then answer real jobs through RunPod's --test_input and its local API."""
    from fastbackend.export import export
    from fastbackend.local import run_test_input, serve_api

    print("exporting notebooks -> exported/ ...", flush=True)
    export(root)
    env = {"FASTBACKEND_BASE_MODEL": str(models_dir / "base"), "FASTBACKEND_ADAPTERS_DIR": str(models_dir / "adapters")}
    started = time.perf_counter()
    local = run_test_input(None, root, env)
    (run_dir / "test_input.log").write_text(local.log)
    if local.returncode != 0:
        raise SystemExit(f"--test_input failed (exit {local.returncode}); log: {run_dir / 'test_input.log'}")
    print(
        f"--test_input (test_input.json, a held-out '6'): {_shown(local.output)}  "
        f"[{time.perf_counter() - started:.1f} s]"
    )
    image, label = _digit_png("inverted", 0)
    job = {"input": {"images": image, "adapter": "inverted", "top_k": 3}}
    with serve_api(root, env=env, log_file=run_dir / "local_api.log") as api:
        print(f"local API {api.url} /runsync (an inverted '{label}'): {_shown(api.runsync(job).get('output'))}")
        print(f"local API {api.url} /run + /status (same image): {_shown(api.run_and_wait(job).get('output'))}")


def print_check_summary(root: Path, run_dir: Path) -> None:
    """The compliance review of the generated handler: the score here, the report in the run folder."""
    from fastbackend.check import CheckOptions, review
    from fastbackend.check.render import render_markdown

    report = review(CheckOptions(root / "exported" / "handler.py"))
    (run_dir / "check.md").write_text(render_markdown(report), encoding="utf-8")
    print(
        f"fastbackend check exported/handler.py: {report.summary_line()} "
        f"(report: {(run_dir / 'check.md').relative_to(root)})"
    )
