"""Embed jobs per second: the worker's `embed` vs transformers' `image-feature-extraction` pipeline.

    python -m benchmarks.embed [--repeats 3] [--quick]

A Dinov2-small backbone (384 wide, 12 layers, patch 14, 224 crop; random weights from its config,
BitImageProcessor as Dinov2 ships it) served as the image-feature-extraction task. Per job of 1,
8 and 64 base64 1 MP JPEGs (benchmarks/realdata.py), in this process, interleaved so machine
noise hits both alike:
- worker: `handle` on an `embed` job (decode, preprocess on the image pool, one forward);
- pipeline: what one writes with transformers: base64 -> PIL -> `pipeline(images, pool=True,
  batch_size=<job size>)`, the same vectors (tests/worker/test_embeddings.py checks within 1e-4).
A second table says where each one's time goes: the worker's own timings (decode and preprocess as
work summed over the image pool's threads, and the images' wall time), the pipeline's decode, its
image processor (timed alone on one image, times the job's images) and the rest of its call.
`--quick` uses a 4-layer, 64-wide backbone: a smoke run, not for the README.
"""

from __future__ import annotations

import argparse
import base64
import io
import logging
import statistics
import time
from dataclasses import replace

from benchmarks.realdata import CACHE, encoded_photos
from benchmarks.report import median_ms, save, table

BACKBONES = {
    "dinov2-small": {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6, "intermediate_size": 1536},
    "dinov2-quick": {"hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 128},
}


def backbone_dir(name: str):
    folder = CACHE / "models" / name
    if (folder / "model.safetensors").is_file():
        return folder
    import torch
    import transformers

    config = transformers.Dinov2Config(**BACKBONES[name], patch_size=14, image_size=224)
    torch.manual_seed(0)
    transformers.Dinov2Model(config).eval().save_pretrained(folder)
    transformers.BitImageProcessorPil(
        size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}
    ).save_pretrained(folder)
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    logging.disable(logging.INFO)
    from PIL import Image
    from transformers import pipeline

    from exported.handler import WORKER as GENERATED
    from worker.config import WorkerConfig
    from worker.runtime import Worker

    name = "dinov2-quick" if args.quick else "dinov2-small"
    folder = backbone_dir(name)
    config = WorkerConfig(base_model=str(folder), adapters_dir=str(folder / "no-adapters"), log_level="ERROR")
    # 64 photos of 1 MP as base64 are over RunPod's body limit; in process there is no HTTP body.
    worker = Worker(GENERATED.functions).setup(replace(config, max_payload_bytes=20_000_000))
    extractor = pipeline("image-feature-extraction", model=str(folder))

    def by_pipeline(encoded: list[str]) -> tuple[float, float, float]:
        """The pipeline's answer, and its stages' times (ms): decode, the image processor, the rest."""
        start = time.perf_counter()
        images = [Image.open(io.BytesIO(base64.b64decode(e))).convert("RGB") for e in encoded]
        decoded = time.perf_counter()
        extractor.image_processor(images[:1])  # the processor alone on one image, scaled: its share
        one = time.perf_counter() - decoded
        start_call = time.perf_counter()
        extractor(images, pool=True, batch_size=len(images))
        call = time.perf_counter() - start_call
        return (decoded - start) * 1000, one * len(images) * 1000, (call - one * len(images)) * 1000

    rows, parts, record = [], [], {"model": name, "photos": "1 MP JPEG"}
    for batch in (1, 8, 64):
        encoded = encoded_photos(1, batch)
        job = {"id": "bench", "input": {"op": "embed", "images": encoded, "encoding_format": "base64"}}
        assert worker.handle(job)["status"] == "success"
        ours, theirs, timings, stages = [], [], [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            timings.append(worker.handle(job)["timings"])
            ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            stages.append(by_pipeline(encoded))
            theirs.append(time.perf_counter() - start)
        w, p = median_ms(ours), median_ms(theirs)
        rows.append((batch, w, round(1000 / w, 2), p, round(1000 / p, 2), f"{p / w:.2f}x"))
        record[f"batch_{batch}"] = {"worker_ms": w, "pipeline_ms": p, "speedup": round(p / w, 3)}
        # Where the time goes: the worker's own timings (decode and preprocess summed over the image
        # pool's threads, so over the wall time when they overlap), the pipeline's stages timed around it.
        images_wall = statistics.median(t["total_ms"] - t["forward_ms"] - t["adapter_ms"] for t in timings)
        decode, processor, forward = (round(statistics.median(s[i] for s in stages), 1) for i in range(3))
        parts.append(
            (batch, *(round(statistics.median(t[k] for t in timings), 1) for k in ("decode_ms", "preprocess_ms")))
            + (round(images_wall, 1), round(statistics.median(t["forward_ms"] for t in timings), 1))
            + (decode, processor, forward)
        )
    print(
        table(
            f"embed jobs: {name}, 1 MP JPEGs, median of {args.repeats}",
            ["images per job", "worker ms", "worker jobs/s", "pipeline ms", "pipeline jobs/s", "speedup"],
            rows,
        )
    )
    print()
    print(
        table(
            f"where an embed job's time goes (ms): {name}, 1 MP JPEGs, median of {args.repeats}",
            [
                "images per job",
                "worker decode (work)",
                "worker preprocess (work)",
                "worker images (wall)",
                "worker forward + encode",
                "pipeline decode",
                "pipeline processor",
                "pipeline forward + rest",
            ],
            parts,
        )
    )
    save("embed", record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
