"""Object detection: the worker vs transformers' object-detection pipeline, same model, same photos.

    python -m benchmarks.detection [--repeats 5] [--arch detr] [--quick]

A tiny DETR-family detector of the tests (tests/fixtures/detection.py) with its processor at its
class defaults (shortest edge 800, longest 1333: what real checkpoints ship) answers scikit-learn's
two photos at about 1 MP as JPEG (1224x816 and 816x1224 portrait, so a job of 8 holds two
shapes). Per job of 1 and 8 images, the median of `--repeats`, the two sides' samples interleaved:

- pipeline: `pipe(images, threshold=0.5)` on the decoded JPEGs (decoding counted), one image per
  forward, as it runs;
- handler: the generated handler's `Worker.handle` on a job of base64 JPEGs (decode, preprocess on
  the image pool, same-shape micro-batches, post-processing, the JSON answer): what an endpoint does;
- and at 8, `Detector.detect` on decoded images (no decoding, no job) and `Detector.forward` alone
  on 8 preprocessed images of one shape: what the model itself costs.

Both answer identically (tests/worker/test_detection_local_api.py). `--quick`: one repeat.
"""

from __future__ import annotations

import argparse
import base64
import io
import logging
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tiny models live with the tests

from fixtures.detection import ARCHITECTURES, build  # noqa: E402

from benchmarks.report import median_ms, save, table  # noqa: E402


def _jpegs(count: int) -> list[bytes]:
    from PIL import Image
    from sklearn.datasets import load_sample_images

    china, flower = (Image.fromarray(a) for a in load_sample_images().images)
    pair = []
    for image in (china.resize((1224, 816), Image.Resampling.BICUBIC), flower.resize((816, 1224), Image.BICUBIC)):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        pair.append(buffer.getvalue())
    return [pair[i % 2] for i in range(count)]


def _median(run, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return median_ms(samples)


def _paired_medians(ours, theirs, repeats: int) -> tuple[float, float]:
    """Medians of both sides, their samples interleaved: on a shared machine a load burst then falls on
    both sides alike, instead of on whichever ran its repeats back to back during it (issue 27)."""
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for run, into in ((theirs, samples[1]), (ours, samples[0])):
            start = time.perf_counter()
            run()
            into.append(time.perf_counter() - start)
    return median_ms(samples[0]), median_ms(samples[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--arch", default="detr", choices=list(ARCHITECTURES))
    parser.add_argument("--quick", action="store_true", help="one repeat: a smoke run")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    logging.disable(logging.INFO)

    from PIL import Image
    from transformers import AutoImageProcessor, pipeline

    from exported.handler import WORKER as GENERATED
    from worker.config import WorkerConfig
    from worker.detection.detector import Detector, stack
    from worker.detection.processor import prepare
    from worker.runtime import Worker

    with tempfile.TemporaryDirectory() as tmp:
        folder = build(args.arch, Path(tmp) / args.arch)
        processor = AutoImageProcessor.from_pretrained(folder, backend="pil")
        processor.size = {"shortest_edge": 800, "longest_edge": 1333}  # the class default, as checkpoints ship
        processor.save_pretrained(folder)
        reference = pipeline("object-detection", model=str(folder))
        detector = Detector.load(folder)
        config = WorkerConfig(base_model=str(folder), adapters_dir=str(Path(tmp) / "no-adapters"), log_level="ERROR")
        worker = Worker(GENERATED.functions).setup(replace(config, max_payload_bytes=20_000_000))
        rows, record = [], {"arch": args.arch, "photos": "1 MP JPEG (landscape and portrait)"}
        for batch in (1, 8):
            jpegs = _jpegs(batch)
            job = {"id": "bench", "input": {"images": [base64.b64encode(j).decode("ascii") for j in jpegs]}}

            def by_pipeline(jpegs=jpegs):
                reference([Image.open(io.BytesIO(j)).convert("RGB") for j in jpegs], threshold=0.5)

            assert worker.handle(job)["status"] == "success"
            by_pipeline()  # warm both
            ours, theirs = _paired_medians(lambda job=job: worker.handle(job), by_pipeline, repeats)
            rows.append([batch, "handler (base64 JPEG job)", ours, theirs, f"{theirs / ours:.2f}x"])
            record[f"batch_{batch}"] = {"handler_ms": ours, "pipeline_ms": theirs, "speedup": round(theirs / ours, 3)}
        images = [Image.open(io.BytesIO(j)).convert("RGB") for j in _jpegs(8)]
        detect = _median(lambda: detector.detect(images, threshold=0.5), repeats)
        landscape = stack([prepare(image, detector.processor) for image in images[::2]] * 2)
        forward = _median(lambda: detector.forward(landscape), repeats)
        rows.append([8, "Detector.detect (decoded, no job)", detect, "", ""])
        rows.append([8, "Detector.forward only (8 of one shape)", forward, "", ""])
        record["batch_8"].update(detect_ms=detect, forward_ms=forward)
    title = f"Object detection, {args.arch} (tiny), ~1 MP JPEGs: ms per job (median of {repeats})"
    print(table(title, ["images per job", "worker path", "worker ms", "pipeline ms", "speed-up"], rows))
    save("detection", record)


if __name__ == "__main__":
    main()
