"""The real-size benchmarks on a CUDA device, with each GPU setting; says so plainly when there is none.

    python -m benchmarks.gpu [--repeats 5]

On a GPU pod: ViT-base and ConvNeXt-tiny with 1 MP photos at batch 1, 8 and 64, handler vs
forward-only vs naive (benchmarks/realsize.py), at the default settings and with each of
FASTBACKEND_AUTOCAST=float16, FASTBACKEND_CHANNELS_LAST=on and FASTBACKEND_COMPILE=true.
"""

from __future__ import annotations

import argparse

from benchmarks.realsize import PREDICT_COLUMNS, predict_rows
from benchmarks.report import save, table

SETTINGS = {
    "default": {},
    "autocast float16": {"autocast": "float16"},
    "channels_last on": {"channels_last": "on"},
    "torch.compile": {"compile": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print(f"GPU benchmark: no CUDA device here (torch {torch.__version__}); nothing measured.")
        save("gpu", {"cuda": False, "torch": torch.__version__})
        return
    rows, record = [], {"cuda": True, "device": torch.cuda.get_device_name(0)}
    for label, settings in SETTINGS.items():
        for model in ("vit-base", "convnext-tiny"):
            r, rec = predict_rows(model, 1, [1, 8, 64], args.repeats, device="cuda", **settings)
            rows += [(label, *row) for row in r]
            record.update({f"{label}/{k}": v for k, v in rec.items()})
    print(
        table(
            f"GPU ({record['device']}), 1 MP JPEG photos, median of {args.repeats}",
            ["settings", *PREDICT_COLUMNS],
            rows,
        )
    )
    print(f"saved {save('gpu', record)}")


if __name__ == "__main__":
    main()
