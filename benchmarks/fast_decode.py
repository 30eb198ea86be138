"""FASTBACKEND_FAST_DECODE=on against the exact decode: pixels and top-1, on photos and digits.

    python -m benchmarks.fast_decode [--architectures vit,convnext,...]

For each architecture of the tests (tests/fixtures/architectures.py: tiny random models, each with
the processor transformers picks for it) and ViT-base/16 224 (benchmarks/realdata.py), the
parity photographs (tests/worker/test_preprocess_parity.py's variants of scikit-learn's china.jpg
and flower.jpg, a portrait turned by its EXIF orientation, and the 1, 3 and 12 MP JPEGs of
benchmarks/realdata.py) go through two in-process workers, fast decode off and on. Reported: the
largest |difference| of the `preprocess` op's pixels to the model's AutoImageProcessor (PIL
backend) on the decode step's full output, the exact worker's (0 is parity) and the fast one's,
and how many photos get the same top-1 from both. Then the demo model on the held-out digits
(16 px PNGs: the reduction must not touch them) with both settings: pixels and top-1.
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.realdata import encoded_photos, model_dir
from benchmarks.report import save, table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tiny models live with the tests

from fixtures.architectures import ARCHITECTURES, build  # noqa: E402
from fixtures.photos import fast_decode_photos, fast_decode_rows, fast_decode_worker  # noqa: E402


def digits(models: Path) -> tuple[int, float, int]:
    """(images, fast vs exact max |pixel diff|, same top-1) for the demo model on the held-out digits."""
    from PIL import Image

    from exported.demo_models import load_digit_task

    images, _ = load_digit_task("digits", "test")
    encoded = []
    for array in images:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        encoded.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    exact, fast = fast_decode_worker(models / "base", False), fast_decode_worker(models / "base", True)
    pixels, labels = [], []
    for worker in (exact, fast):
        rows, predicted = [], []
        for start in range(0, len(encoded), worker.config.max_batch):
            chunk = encoded[start : start + worker.config.max_batch]
            job = {"op": "preprocess", "images": chunk, "return_pixels": True}
            rows.append(np.array(worker.handle({"id": "d", "input": job})["pixels"], dtype=np.float32))
            answer = worker.handle({"id": "d", "input": {"images": chunk}})
            predicted += [p["label"] for p in answer["predictions"]]
        pixels.append(np.concatenate(rows))
        labels.append(predicted)
    same = sum(a == b for a, b in zip(*labels))
    return len(encoded), float(np.abs(pixels[0] - pixels[1]).max()), same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--architectures", default=",".join(ARCHITECTURES), help="comma list (default: all)")
    parser.add_argument("--vit-base", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--models", default="models")
    args = parser.parse_args()
    photos = fast_decode_photos(full=True)
    photos.update(
        {
            f"{name}-{mp}mp-camera": encoded
            for mp in (1, 3, 12)
            for name, encoded in zip(("china", "flower"), encoded_photos(mp, 2))
        }
    )
    rows, record = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        folders = {name: build(name, Path(tmp) / name) for name in args.architectures.split(",") if name}
        if args.vit_base:
            folders["vit-base (224)"] = model_dir("vit-base")
        for arch, folder in folders.items():
            result = fast_decode_rows(folder, photos)
            for row in result:
                print(
                    f"{arch} | {row[0]} | exact {row[1]:.1e} | fast {row[2]:.4f} | same top-1: {row[3]}",
                    file=sys.stderr,
                )
            for name, exact, fast, same in result:
                record[f"{arch}/{name}"] = {"exact_max_abs_diff": exact, "fast_max_abs_diff": fast, "same_top1": same}
            worst = max(result, key=lambda r: r[2])
            rows.append(
                (
                    arch,
                    len(result),
                    f"{max(r[1] for r in result):.1e}",
                    f"{worst[2]:.3f} ({worst[0]})",
                    f"{sum(r[3] for r in result)}/{len(result)}",
                )
            )
    count, diff, same = digits(Path(args.models))
    record["digits"] = {"images": count, "fast_vs_exact_max_abs_diff": diff, "same_top1": same}
    rows.append(("demo ViT, held-out digits (16 px)", count, "-", f"{diff:.1e} (vs exact)", f"{same}/{count}"))
    print(
        table(
            "Fast decode (FASTBACKEND_FAST_DECODE=on) vs the model's processor, max |diff| in normalised units",
            ["model", "photos", "exact max |diff|", "fast max |diff| (worst photo)", "same top-1 as exact"],
            rows,
        )
    )
    print(f"saved {save('fast_decode', record)}")


if __name__ == "__main__":
    main()
