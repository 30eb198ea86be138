"""Half precision against float32: top-1 agreement on the held-out digits, for the base and each adapter.

    python -m benchmarks.precision [--models models]

Each setting is a worker set up as the handler sets it up (FASTBACKEND_DTYPE: the weights in that
dtype; FASTBACKEND_AUTOCAST: float32 weights and the forward under torch.autocast) answering the same
predict jobs as a float32 worker: every held-out image of a task (359 each), through the base for
`digits` and through each adapter for its own task. Not a speed claim: on this CPU it measures what
half precision does to the answers, which a GPU computes with other kernels (benchmarks/gpu.py times
them there). Prints the Markdown table in docs/explanation/precision.md; writes
bench-results/precision.json.
"""

from __future__ import annotations

import argparse
import base64
import io
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import save, table

SETTINGS = (
    ("FASTBACKEND_DTYPE=float16", {"dtype": "float16"}),
    ("FASTBACKEND_DTYPE=bfloat16", {"dtype": "bfloat16"}),
    ("FASTBACKEND_AUTOCAST=float16", {"autocast": "float16"}),
    ("FASTBACKEND_AUTOCAST=bfloat16", {"autocast": "bfloat16"}),
)
JOB_IMAGES = 64


def held_out_jobs(task: str, adapter: str | None) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Predict jobs holding every held-out image of `task` (PNG, as a client sends them), and the labels."""
    from PIL import Image

    from exported.demo_models import load_digit_task

    images, labels = load_digit_task(task, "test")
    encoded = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        encoded.append(base64.b64encode(buffer.getvalue()).decode())
    jobs = [
        {"id": f"{task}-{i}", "input": {"images": encoded[i : i + JOB_IMAGES], "return_logits": True}}
        for i in range(0, len(encoded), JOB_IMAGES)
    ]
    for job in jobs:
        if adapter:
            job["input"]["adapter"] = adapter
    return jobs, labels


def answers(worker: Any, jobs: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(top-1 label indices, logits) over the jobs' images, through `Worker.handle`."""
    top, logits = [], []
    for job in jobs:
        answer = worker.handle(job)
        assert answer["status"] == "success", answer
        for prediction in answer["predictions"]:
            top.append(prediction["top_k"][0]["index"])
            logits.append(prediction["logits"])
    return np.array(top), np.array(logits, dtype=np.float64)


def compare(models: Path, settings: dict[str, Any], cases: list[tuple[str, str | None]]) -> list[dict[str, Any]]:
    """Per case (task, adapter or None): agreement of `settings` with float32, and both accuracies."""
    from exported.handler import WORKER as GENERATED
    from worker.config import WorkerConfig
    from worker.runtime import Worker

    def make(**overrides: Any) -> Worker:
        config = WorkerConfig(base_model=str(models / "base"), adapters_dir=str(models / "adapters"), **overrides)
        return Worker(GENERATED.functions).setup(config)

    reference, tuned = make(), make(**settings)
    rows = []
    for task, adapter in cases:
        jobs, labels = held_out_jobs(task, adapter)
        (ref_top, ref_logits), (top, logits) = answers(reference, jobs), answers(tuned, jobs)
        rows.append(
            {
                "task": task,
                "adapter": adapter or "base",
                "images": len(labels),
                "agree": int((top == ref_top).sum()),
                "accuracy_float32": float((ref_top == labels).mean()),
                "accuracy": float((top == labels).mean()),
                "max_logit_diff": float(np.abs(logits - ref_logits).max()),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="models", help="the demo models (default: models)")
    args = parser.parse_args()
    models = Path(args.models)
    cases = [("digits", None), *((p.name, p.name) for p in sorted((models / "adapters").iterdir()) if p.is_dir())]
    record, rows = {}, []
    for name, settings in SETTINGS:
        record[name] = compare(models, settings, cases)
        for r in record[name]:
            rows.append(
                (
                    name,
                    f"{r['adapter']} on {r['task']}",
                    f"{r['agree']}/{r['images']} ({100 * r['agree'] / r['images']:.1f}%)",
                    f"{100 * r['accuracy_float32']:.1f}%",
                    f"{100 * r['accuracy']:.1f}%",
                    f"{r['max_logit_diff']:.3g}",
                )
            )
    header = ("setting", "model", "top-1 = float32's", "float32 accuracy", "accuracy", "max abs logit diff")
    print(table("Half precision vs float32, held-out digits, CPU", header, rows))
    save("precision", {"results": record})


if __name__ == "__main__":
    main()
