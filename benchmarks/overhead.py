"""Per-job overhead of the handler over the raw floor (decode + preprocess + forward).

    python -m benchmarks.overhead [--repeats 200]

The floor does the same work directly (PIL decode, the exported preprocessing, the model's
forward); the handler adds validation, limits, admission, metrics, logging and the JSON
checks. Both run in this process on the same images, interleaved, so machine noise hits
both alike. Overhead = handler time minus its own decode+preprocess+forward timings.
"""

from __future__ import annotations

import argparse
import base64
import io
import logging
import time

import numpy as np

from benchmarks.report import median_ms, save, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--models", default="models")
    args = parser.parse_args()

    from PIL import Image

    from exported.demo_models import load_digit_task
    from exported.handler import WORKER as GENERATED  # the notebook functions export wired in
    from worker.config import WorkerConfig
    from worker.runtime import Worker

    worker = Worker(GENERATED.functions)
    worker.setup(
        WorkerConfig(base_model=f"{args.models}/base", adapters_dir=f"{args.models}/adapters", log_level="ERROR")
    )
    logging.getLogger("fastbackend").setLevel(logging.ERROR)  # measure the work, not the terminal
    host = worker.host
    images, _ = load_digit_task("inverted", "test")

    def b64(array: np.ndarray) -> str:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode()

    rows, record = [], {}
    for batch in (1, 64):
        encoded = [b64(images[i % len(images)]) for i in range(batch)]
        job = {"id": "bench", "input": {"images": encoded, "adapter": "inverted"}}
        handler_s, floor_s, overhead_s = [], [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            answer = worker.handle(job)
            elapsed = time.perf_counter() - start
            t = answer["timings"]
            handler_s.append(elapsed)
            overhead_s.append(elapsed - (t["decode_ms"] + t["preprocess_ms"] + t["forward_ms"]) / 1000)
            start = time.perf_counter()
            decoded = [np.asarray(Image.open(io.BytesIO(base64.b64decode(e)))) for e in encoded]
            pixels = host.fns.to_pixel_values(decoded, host.transform, host.preprocess_config)
            host.fns.predict_logits(host.model, pixels, host.cache.entries["inverted"].key)
            floor_s.append(time.perf_counter() - start)
        h, f, o = median_ms(handler_s), median_ms(floor_s), median_ms(overhead_s)
        rows.append((batch, h, f, f"{h / f:.2f}x", o))
        record[f"batch_{batch}"] = {"handler_ms": h, "floor_ms": f, "ratio": round(h / f, 3), "overhead_ms": o}
    print(
        table(
            f"Per-job overhead, median of {args.repeats}",
            ["batch", "handler ms", "raw floor ms", "handler / floor", "overhead ms"],
            rows,
        )
    )
    print(f"saved {save('overhead', record)}")


if __name__ == "__main__":
    main()
