"""Export + check time for all notebooks, vs the floor of reading them.

    python -m benchmarks.tooling [--repeats 10]

Export renders every module from the notebooks and compares with exported/ (`export --check`);
check reviews exported/handler.py statically. The floor only parses the notebooks with nbformat.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.report import median_ms, save, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    import nbformat

    from fastbackend.check import CheckOptions, review
    from fastbackend.export import stale_diff

    root = Path.cwd()
    notebooks = sorted((root / "notebooks").glob("*.ipynb"))
    samples: dict[str, list[float]] = {"export": [], "check": [], "floor": []}
    for _ in range(args.repeats):
        for name, fn in (
            ("floor", lambda: [nbformat.read(p, as_version=4) for p in notebooks]),
            ("export", lambda: stale_diff(root)),
            ("check", lambda: review(CheckOptions(root / "exported" / "handler.py"))),
        ):
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    ms = {k: median_ms(v) for k, v in samples.items()}
    rows = [
        (f"export --check ({len(notebooks)} notebooks)", ms["export"], f"{ms['export'] / ms['floor']:.2f}x"),
        ("check exported/handler.py (static)", ms["check"], f"{ms['check'] / ms['floor']:.2f}x"),
        ("floor: read the notebooks", ms["floor"], "1.00x"),
    ]
    print(table(f"Export and check, median of {args.repeats}", ["what", "ms", "vs floor"], rows))
    print(f"saved {save('tooling', ms)}")


if __name__ == "__main__":
    main()
