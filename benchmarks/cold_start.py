"""Cold start: process spawn -> first answer of RunPod's local API, vs the floor.

    python -m benchmarks.cold_start [--runs 5]

The floor is a process that only imports the same libraries, loads the same weights and
runs one forward, then exits: what any worker must pay. The worker additionally validates
its config, preloads adapters, warms up, imports runpod and starts the API server.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.report import median_ms, save, table
from fastbackend.local import handler_env, serve_api

FLOOR = """
import numpy as np, torch
from transformers import AutoModelForImageClassification
from peft import PeftModel
import albumentations, runpod
model = AutoModelForImageClassification.from_pretrained("{base}")
model = PeftModel.from_pretrained(model, "{adapter}")
with torch.inference_mode():
    model(pixel_values=torch.zeros(1, 1, 16, 16))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--models", default="models")
    args = parser.parse_args()
    root = Path.cwd()
    models = Path(args.models).resolve()
    env = {"FASTBACKEND_BASE_MODEL": str(models / "base"), "FASTBACKEND_ADAPTERS_DIR": str(models / "adapters")}
    job = {"input": {"op": "ping"}}
    worker_s, floor_s = [], []
    for _ in range(args.runs):
        start = time.perf_counter()
        with serve_api(root, env=env) as api:
            api.runsync(job)
            worker_s.append(time.perf_counter() - start)
        code = FLOOR.format(base=models / "base", adapter=models / "adapters" / "inverted")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=handler_env(), capture_output=True)
        floor_s.append(time.perf_counter() - start)
    w, f = median_ms(worker_s), median_ms(floor_s)
    print(
        table(
            f"Cold start, median of {args.runs}",
            ["what", "ms", "vs floor"],
            [
                ("worker: spawn -> first /runsync answer", w, f"{w / f:.2f}x"),
                ("floor: imports + weights + one forward", f, "1.00x"),
            ],
        )
    )
    print(f"saved {save('cold_start', {'worker_ms': w, 'floor_ms': f, 'ratio': round(w / f, 3), 'runs': args.runs})}")


if __name__ == "__main__":
    main()
