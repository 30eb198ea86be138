"""Semantic segmentation: the worker's handler vs transformers' image-segmentation pipeline, same model, same photos.

    python -m benchmarks.segmentation [--repeats 3]

A SegFormer of B0's shape (MiT-B0: hidden sizes 32-256, two blocks per stage; random weights, 19
labels as Cityscapes) with `SegformerImageProcessor` at its class default (512x512) answers
scikit-learn's two photos resized to about 1 MP (1224x816 and 816x1224 portrait). Per job of 1 and
8 images, the median of `--repeats`:
- the pipeline: `pipe(images)` on the JPEGs opened with PIL (it decodes them), one image per
  forward, its masks as PIL images;
- the handler: `Worker.handle` in process on the same JPEGs as base64 (decode, preprocess, one
  batched forward, the masks answer as the local API returns it: base64 PNGs);
- forward only: the model on the 8 preprocessed images, what the handler cannot go below.
Both answer the same masks (tests/worker/test_segmentation_parity.py).
"""

from __future__ import annotations

import argparse
import base64
import io
import tempfile
import time
from pathlib import Path

from benchmarks.report import median_ms, save, table

B0 = {
    "num_encoder_blocks": 4,
    "depths": [2, 2, 2, 2],
    "sr_ratios": [8, 4, 2, 1],
    "hidden_sizes": [32, 64, 160, 256],
    "patch_sizes": [7, 3, 3, 3],
    "strides": [4, 2, 2, 2],
    "num_attention_heads": [1, 2, 5, 8],
    "mlp_ratios": [4, 4, 4, 4],
    "decoder_hidden_size": 256,
}
LABELS = [f"class {n}" for n in range(19)]


def _jpegs(count: int) -> list[bytes]:
    from PIL import Image
    from sklearn.datasets import load_sample_images

    china, flower = (Image.fromarray(a) for a in load_sample_images().images)
    pair = [china.resize((1224, 816), Image.Resampling.BICUBIC), flower.resize((816, 1224), Image.Resampling.BICUBIC)]
    encoded = []
    for image in pair:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        encoded.append(buffer.getvalue())
    return [encoded[i % 2] for i in range(count)]


def _median(run, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return median_ms(samples)


def _worker(folder: Path):
    from exported.handler import WORKER as GENERATED
    from worker.config import WorkerConfig
    from worker.runtime import Worker

    config = WorkerConfig(base_model=str(folder), adapters_dir=str(folder / "none"), warmup=False, log_level="ERROR")
    object.__setattr__(config, "max_payload_bytes", 10**10)  # in process: no HTTP body limit applies
    return Worker(GENERATED.functions).setup(config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import numpy as np
    import torch
    from PIL import Image
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessorPil, pipeline

    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "segformer-b0"
        torch.manual_seed(0)
        config = SegformerConfig(**B0, id2label=dict(enumerate(LABELS)), label2id={k: i for i, k in enumerate(LABELS)})
        SegformerForSemanticSegmentation(config).eval().save_pretrained(folder)
        SegformerImageProcessorPil().save_pretrained(folder)  # 512x512, bilinear, ImageNet mean/std
        reference = pipeline("image-segmentation", model=str(folder))
        worker = _worker(folder)
        rows = []
        for batch in (1, 8):
            jpegs = _jpegs(batch)
            job = {"input": {"images": [base64.b64encode(j).decode() for j in jpegs]}}

            def theirs_run(jpegs=jpegs):
                return reference([Image.open(io.BytesIO(j)) for j in jpegs])

            def ours_run(job=job):
                answer = worker.handle(job)
                assert answer["status"] == "success", answer
                return answer

            theirs_run(), ours_run()  # warm both
            theirs, ours = _median(theirs_run, args.repeats), _median(ours_run, args.repeats)
            rows.append([batch, theirs, ours, round(theirs / ours, 2)])
        task, model = worker.host.task, worker.host.model
        images = [Image.open(io.BytesIO(j)).convert("RGB") for j in _jpegs(8)]
        inputs = {
            "pixel_values": np.concatenate(
                [task.preprocess(image, image.size[::-1])[0]["pixel_values"] for image in images]
            )
        }
        forward = _median(lambda: task.forward(model, inputs, None), args.repeats)
        handler_8 = rows[-1][2]
        rows.append(["8 (forward only)", "", forward, f"handler / forward {handler_8 / forward:.2f}"])
    title = (
        "Semantic segmentation, SegFormer-B0 shape (random, 19 labels, 512x512), ~1 MP photos: "
        f"ms per job (median of {args.repeats})"
    )
    print(table(title, ["images per job", "pipeline ms", "handler ms", "speed-up"], rows))
    save("segmentation", {"rows": rows})


if __name__ == "__main__":
    main()
