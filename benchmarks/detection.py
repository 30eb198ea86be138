"""Object detection: the worker's Detector vs transformers' object-detection pipeline, same model, same photos.

    python -m benchmarks.detection [--repeats 5] [--arch detr]

A tiny DETR-family detector of the tests (tests/fixtures/detection.py) with its processor at its
class defaults (shortest edge 800, longest 1333: what real checkpoints ship) answers scikit-learn's
two photos resized to about 1 MP (1224x816 and 816x1224 portrait, so a batch of 8 holds two
shapes). Per job of 1 and 8 upright images: the pipeline (`pipe(images, threshold=0.5)`, one
image per forward, as it runs) vs `Detector.detect` (same-shape micro-batches), the median of
`--repeats`, with the ratio; and `Detector.forward` alone on the batch of 8, to show what the
model costs against preprocessing and post-processing. Both answer identically (the parity tests).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tiny models live with the tests

from fixtures.detection import ARCHITECTURES, build  # noqa: E402

from benchmarks.report import median_ms, save, table  # noqa: E402


def _photos(count: int) -> list:
    from PIL import Image
    from sklearn.datasets import load_sample_images

    china, flower = (Image.fromarray(a) for a in load_sample_images().images)
    pair = [china.resize((1224, 816), Image.Resampling.BICUBIC), flower.resize((816, 1224), Image.Resampling.BICUBIC)]
    return [pair[i % 2] for i in range(count)]


def _median(run, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return median_ms(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--arch", default="detr", choices=list(ARCHITECTURES))
    args = parser.parse_args()

    import torch
    from transformers import AutoImageProcessor, pipeline

    from worker.detection.detector import Detector, stack
    from worker.detection.processor import prepare

    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        folder = build(args.arch, Path(tmp) / args.arch)
        processor = AutoImageProcessor.from_pretrained(folder, backend="pil")
        processor.size = {"shortest_edge": 800, "longest_edge": 1333}  # the class default, as checkpoints ship
        processor.save_pretrained(folder)
        reference = pipeline("object-detection", model=str(folder))
        detector = Detector.load(folder)
        rows = []
        for batch in (1, 8):
            images = _photos(batch)
            reference(images[:1])
            detector.detect(images[:1])  # warm both
            theirs = _median(lambda images=images: reference(images, threshold=0.5), args.repeats)
            ours = _median(lambda images=images: detector.detect(images, threshold=0.5), args.repeats)
            rows.append([batch, theirs, ours, round(theirs / ours, 2)])
        landscape = [prepare(image, detector.processor) for image in _photos(8)[::2]] * 2
        forward = _median(lambda: detector.forward(stack(landscape)), args.repeats)
        rows.append(["8 (forward only)", "", forward, ""])
    title = f"Object detection, {args.arch} (tiny), ~1 MP photos: ms per job (median of {args.repeats})"
    print(table(title, ["images per job", "pipeline ms", "worker ms", "speed-up"], rows))
    save("detection", {"arch": args.arch, "rows": rows})


if __name__ == "__main__":
    main()
