"""Preprocessing throughput: the exported `to_pixel_values` vs the model's own AutoImageProcessor.

    python -m benchmarks.preprocess [--repeats 50]

Both turn the same 256 uint8 digits into an (N, C, H, W) float32 batch by the base model's
processor (PIL backend); the reference is transformers' own, called on the list of images.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.report import median_ms, save, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--models", default="models")
    args = parser.parse_args()

    from PIL import Image
    from transformers import AutoImageProcessor

    from exported.demo_models import load_digit_task
    from exported.preprocess import build_eval_transform, read_preprocess_config, to_pixel_values

    config = read_preprocess_config(f"{args.models}/base")
    images = [Image.fromarray(i) for i in load_digit_task("digits", "all")[0][:256]]
    ours = build_eval_transform(config)
    processor = AutoImageProcessor.from_pretrained(f"{args.models}/base", backend="pil")

    def plain_loop() -> np.ndarray:
        return processor(images, return_tensors="np")["pixel_values"]

    ours_s, plain_s = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        a = to_pixel_values(images, ours, config)
        ours_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        b = plain_loop()
        plain_s.append(time.perf_counter() - start)
    assert np.abs(a - b).max() <= 1e-3
    o, p = median_ms(ours_s), median_ms(plain_s)
    rows = [
        ("exported to_pixel_values", o, round(len(images) / o * 1000), f"{o / p:.2f}x"),
        ("AutoImageProcessor (PIL)", p, round(len(images) / p * 1000), "1.00x"),
    ]
    print(
        table(
            f"Preprocessing {len(images)} images, median of {args.repeats}",
            ["what", "ms", "images/s", "time ratio"],
            rows,
        )
    )
    print(f"saved {save('preprocess', {'ours_ms': o, 'plain_ms': p, 'images': len(images)})}")


if __name__ == "__main__":
    main()
