"""Adapter costs: forward with an adapter (unmerged, merged) vs the base, switch and load times.

    python -m benchmarks.adapters [--repeats 200]

All forwards use the same preprocessed batch; medians of interleaved repeats.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.report import median_ms, save, table


def timed(fn, repeats: int) -> list[float]:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--models", default="models")
    args = parser.parse_args()

    from exported.demo_models import load_digit_task
    from exported.inference import attach_adapter, load_base_model, merge_adapter, predict_logits
    from exported.preprocess import build_eval_transform, read_preprocess_config, to_pixel_values

    base_dir, adapters = f"{args.models}/base", f"{args.models}/adapters"
    config = read_preprocess_config(base_dir)
    pixels = to_pixel_values(load_digit_task("inverted", "test")[0][:64], build_eval_transform(config), config)
    one = pixels[:1]

    base = load_base_model(base_dir)
    peft = attach_adapter(load_base_model(base_dir), f"{adapters}/inverted", "inverted")
    peft = attach_adapter(peft, f"{adapters}/rot90", "rot90")
    merged = merge_adapter(attach_adapter(load_base_model(base_dir), f"{adapters}/inverted", "inverted"), "inverted")

    rows, record = [], {}
    base_64 = median_ms(timed(lambda: predict_logits(base, pixels), args.repeats))
    for name, fn in (
        ("unmerged adapter, batch 64", lambda: predict_logits(peft, pixels, "inverted")),
        ("merged adapter, batch 64", lambda: predict_logits(merged, pixels)),
    ):
        ms = median_ms(timed(fn, args.repeats))
        rows.append((name, ms, "base forward, batch 64", base_64, f"{ms / base_64:.2f}x"))
        record[name] = {"ms": ms, "baseline_ms": base_64}

    same = median_ms(timed(lambda: predict_logits(peft, one, "inverted"), args.repeats))
    flip = iter(["inverted", "rot90"] * args.repeats)
    switching = median_ms(timed(lambda: predict_logits(peft, one, next(flip)), args.repeats))
    rows.append(
        (
            "cached adapter switch + forward, batch 1",
            switching,
            "same adapter + forward, batch 1",
            same,
            f"{switching / same:.2f}x",
        )
    )
    record["cached_switch"] = {"ms": switching, "baseline_ms": same}

    loads = []
    for _ in range(max(5, args.repeats // 40)):
        fresh = load_base_model(base_dir)
        start = time.perf_counter()
        attach_adapter(fresh, f"{adapters}/inverted", "inverted")
        loads.append(time.perf_counter() - start)
    base_loads = timed(lambda: load_base_model(base_dir), max(5, args.repeats // 40))
    load, base_load = median_ms(loads), median_ms(base_loads)
    rows.append(("first (uncached) adapter load", load, "base model load", base_load, f"{load / base_load:.2f}x"))
    record["first_adapter_load"] = {"ms": load, "baseline_ms": base_load}
    print(table(f"Adapters, median of {args.repeats}", ["measured", "ms", "baseline", "baseline ms", "ratio"], rows))
    print(f"saved {save('adapters', record)}")
    assert np.allclose(predict_logits(peft, pixels, "inverted"), predict_logits(merged, pixels), atol=1e-4)


if __name__ == "__main__":
    main()
