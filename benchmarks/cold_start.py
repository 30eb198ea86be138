"""Cold start: process spawn -> first answer of RunPod's local API, vs the floor and a plain handler.

    python -m benchmarks.cold_start [--runs 5] [--vit-runs 5]

The floor is a process that only imports what the model needs, loads the same weights and runs
one forward, then exits: what any worker must pay. The worker additionally validates its config,
preloads adapters, warms up, imports runpod and starts the API server. The plain handler is
benchmarks/plain_handler.py: everything imported at the top, the model loaded at import. For
ViT-base (benchmarks/realdata.py) the weight loading is also compared with
`safetensors.torch.load_file` of the same file, in this process (imports already paid).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.realdata import encoded_photos, model_dir
from benchmarks.report import median_ms, save, table
from fastbackend.local import HandlerCommand, LocalServer, handler_env

EMBEDDED_FLOOR = """
import numpy as np, torch
from transformers import AutoModelForImageClassification
from peft import PeftModel
import albumentations, runpod
model = AutoModelForImageClassification.from_pretrained("{base}")
model = PeftModel.from_pretrained(model, "{adapter}")
with torch.inference_mode():
    model(pixel_values=torch.zeros(1, 1, 16, 16))
"""
# A base-only model needs torch and transformers, nothing else.
VIT_FLOOR = """
import torch
from transformers import AutoModelForImageClassification
model = AutoModelForImageClassification.from_pretrained("{base}").eval()
with torch.inference_mode():
    model(pixel_values=torch.zeros(1, 3, 224, 224))
"""


def spawn_to_answer(root: Path, env: dict[str, str], job: dict, module: str = "exported.handler") -> float:
    """Seconds from spawning `module` under --rp_serve_api to its first /runsync answer to `job`."""
    path = root / (module.replace(".", "/") + ".py")
    command = HandlerCommand.exported(root, env) if module == "exported.handler" else None
    command = command or HandlerCommand.for_handler(path, env={**handler_env(), **env})
    with LocalServer(command) as server:
        if server.wait_ready(900) is None:
            raise RuntimeError(f"{module} did not start: {server.log_tail()}")
        answer = server.api.runsync(job)
        elapsed = time.perf_counter() - server.spawned
    assert "predictions" in str(answer) or "pong" in str(answer), str(answer)[:500]
    return elapsed


def floor(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=handler_env(), capture_output=True)
    return time.perf_counter() - start


def weight_loading(base: Path, repeats: int) -> tuple[float, float]:
    """(worker's load_base_model, safetensors.torch.load_file) in seconds, medians in this process."""
    from safetensors.torch import load_file

    from exported.handler import WORKER

    load_base_model = WORKER.functions.load_base_model
    ours, plain = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        load_base_model(str(base))
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        load_file(str(base / "model.safetensors"))
        plain.append(time.perf_counter() - start)
    return median_ms(ours), median_ms(plain)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--vit-runs", type=int, default=5)
    parser.add_argument("--models", default="models")
    args = parser.parse_args()
    root = Path.cwd()
    models = Path(args.models).resolve()
    env = {"FASTBACKEND_BASE_MODEL": str(models / "base"), "FASTBACKEND_ADAPTERS_DIR": str(models / "adapters")}
    worker_s, floor_s = [], []
    for _ in range(args.runs):
        worker_s.append(spawn_to_answer(root, env, {"input": {"op": "ping"}}))
        floor_s.append(floor(EMBEDDED_FLOOR.format(base=models / "base", adapter=models / "adapters" / "inverted")))
    w, f = median_ms(worker_s), median_ms(floor_s)

    vit = model_dir("vit-base")
    vit_env = {"FASTBACKEND_BASE_MODEL": str(vit), "FASTBACKEND_ADAPTERS_DIR": str(vit / "no-adapters")}
    photo = {"input": {"images": encoded_photos(1, 1)[0]}}  # one 1 MP JPEG, both answer a predict
    starts = {
        "worker": lambda: spawn_to_answer(root, vit_env, photo),
        "worker_no_warmup": lambda: spawn_to_answer(root, {**vit_env, "FASTBACKEND_WARMUP": "false"}, photo),
        "floor": lambda: floor(VIT_FLOOR.format(base=vit)),
        "plain": lambda: spawn_to_answer(root, {"PLAIN_MODEL": str(vit)}, photo, module="benchmarks.plain_handler"),
    }
    samples: dict[str, list[float]] = {k: [] for k in starts}
    for round_ in range(args.vit_runs):
        # Rounds of one start each, the order turning: this machine's speed drifts over minutes, so
        # each ratio is taken within a round and the median of those is reported.
        names = list(starts)
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            samples[name].append(starts[name]())
    vw, vn, vf, vp = (median_ms(samples[k]) for k in ("worker", "worker_no_warmup", "floor", "plain"))

    def ratio(a: str, b: str) -> float:
        return round(statistics.median(x / y for x, y in zip(samples[a], samples[b])), 3)

    def vs(a: str, b: str) -> str:
        return f"{ratio(a, b):.2f}x"

    load_ms, load_file_ms = weight_loading(vit, max(args.vit_runs, 3))
    print(
        table(
            f"Cold start, embedded model, median of {args.runs}",
            ["what", "ms", "vs floor"],
            [
                ("worker: spawn -> first /runsync answer", w, f"{w / f:.2f}x"),
                ("floor: imports + weights + one forward", f, "1.00x"),
            ],
        )
    )
    print()
    print(
        table(
            f"Cold start, ViT-base/16 224 (330 MB), medians of {args.vit_runs} rounds (ratios within each round)",
            ["what", "ms", "vs floor", "vs plain handler"],
            [
                ("worker: spawn -> first /runsync answer", vw, vs("worker", "floor"), vs("worker", "plain")),
                (
                    "worker, FASTBACKEND_WARMUP=false",
                    vn,
                    vs("worker_no_warmup", "floor"),
                    vs("worker_no_warmup", "plain"),
                ),
                ("floor: torch + transformers + weights + one forward", vf, "1.00x", vs("floor", "plain")),
                ("plain handler (benchmarks/plain_handler.py)", vp, vs("plain", "floor"), "1.00x"),
                ("weight loading: worker's load_base_model", load_ms, "", ""),
                ("weight loading: safetensors.torch.load_file", load_file_ms, "", ""),
            ],
        )
    )
    record = {
        "embedded": {"worker_ms": w, "floor_ms": f, "ratio": round(w / f, 3), "runs": args.runs},
        "vit_base": {
            "worker_ms": vw,
            "worker_no_warmup_ms": vn,
            "floor_ms": vf,
            "plain_handler_ms": vp,
            "worker_over_floor": ratio("worker", "floor"),
            "worker_over_plain": ratio("worker", "plain"),
            "worker_no_warmup_over_plain": ratio("worker_no_warmup", "plain"),
            "load_base_model_ms": load_ms,
            "load_file_ms": load_file_ms,
            "runs": args.vit_runs,
            "samples_s": {k: [round(v, 3) for v in vs] for k, vs in samples.items()},
        },
    }
    print(f"saved {save('cold_start', record)}")


if __name__ == "__main__":
    main()
