"""Zero-shot jobs per second: the worker's `predict` vs transformers' `zero-shot-image-classification`.

    python -m benchmarks.zero_shot [--repeats 3] [--quick]

A CLIP shaped as openai/clip-vit-base-patch32 (vision 768 wide, 12 layers, patch 32, 224 crop;
text 512 wide, 12 layers; projection 512; random weights from its config, CLIPImageProcessorPil),
with a byte-level BPE tokenizer whose merges spell every word of the labels (one token per word,
as CLIP's own BPE tokenises common English words; fastbackend/training/zero_shot_demo.py).
Per job of 1 and 8 base64 1 MP JPEGs (benchmarks/realdata.py) and 10 candidate labels, the same
labels in every job, in this process, interleaved so machine noise hits both alike:
- worker: `handle` on a predict job (decode, preprocess, the vision tower; the labels' text
  embeddings come from the label cache after the first job);
- pipeline: what one writes with transformers: base64 -> PIL ->
  `pipeline(images, candidate_labels=..., batch_size=<job size>)`, which runs the text tower on the
  labels for every image (tests/worker/test_zero_shot_api.py checks the answers agree within 1e-4).
`--quick` uses a 2-layer, 64-wide CLIP: a smoke run, not for the docs.
"""

from __future__ import annotations

import argparse
import base64
import io
import logging
import time
from dataclasses import replace

from benchmarks.realdata import CACHE, encoded_photos
from benchmarks.report import median_ms, save, table

LABELS = ["cat", "dog", "car", "flower", "building", "bird", "tree", "boat", "horse", "person"]
SIZES = {
    "clip-b32": {"vision": (768, 12, 12, 3072), "text": (512, 12, 8, 2048), "projection": 512},
    "clip-quick": {"vision": (64, 2, 2, 128), "text": (64, 2, 2, 128), "projection": 64},
}


def clip_dir(name: str):
    folder = CACHE / "models" / name
    if (folder / "model.safetensors").is_file():
        return folder
    import torch
    import transformers

    from fastbackend.training.zero_shot_demo import caption_words, word_tokenizer

    tokenizer = word_tokenizer(caption_words(["This is a photo of {}."], LABELS))
    sizes = SIZES[name]

    def tower(hidden: int, layers: int, heads: int, intermediate: int) -> dict:
        return {
            "hidden_size": hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "intermediate_size": intermediate,
        }

    text = {
        **tower(*sizes["text"]),
        "vocab_size": len(tokenizer),
        "max_position_embeddings": 77,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision = {**tower(*sizes["vision"]), "image_size": 224, "patch_size": 32}
    config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=sizes["projection"])
    torch.manual_seed(0)
    transformers.CLIPModel(config).eval().save_pretrained(folder)
    transformers.CLIPImageProcessorPil(size={"shortest_edge": 224}, crop_size=224).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
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

    name = "clip-quick" if args.quick else "clip-b32"
    folder = clip_dir(name)
    config = WorkerConfig(base_model=str(folder), adapters_dir=str(folder / "no-adapters"), log_level="ERROR")
    worker = Worker(GENERATED.functions).setup(replace(config, max_payload_bytes=20_000_000))
    classifier = pipeline("zero-shot-image-classification", model=str(folder))

    def by_pipeline(encoded: list[str]) -> None:
        images = [Image.open(io.BytesIO(base64.b64decode(e))).convert("RGB") for e in encoded]
        classifier(images, candidate_labels=LABELS, batch_size=len(images))

    rows, record = [], {"model": name, "photos": "1 MP JPEG", "labels": len(LABELS)}
    for batch in (1, 8):
        encoded = encoded_photos(1, batch)
        job = {"id": "bench", "input": {"images": encoded, "candidate_labels": LABELS}}
        assert worker.handle(job)["status"] == "success"
        by_pipeline(encoded)  # warm both
        ours, theirs = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            worker.handle(job)
            ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            by_pipeline(encoded)
            theirs.append(time.perf_counter() - start)
        w, p = median_ms(ours), median_ms(theirs)
        rows.append((batch, w, round(1000 / w, 2), p, round(1000 / p, 2), f"{p / w:.2f}x"))
        record[f"batch_{batch}"] = {"worker_ms": w, "pipeline_ms": p, "speedup": round(p / w, 3)}
    record["label_cache"] = worker.host.task.label_embeddings.stats()
    print(
        table(
            f"zero-shot jobs: {name}, 1 MP JPEGs, {len(LABELS)} labels, median of {args.repeats}",
            ["images per job", "worker ms", "worker jobs/s", "pipeline ms", "pipeline jobs/s", "speedup"],
            rows,
        )
    )
    save("zero_shot", record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
