"""Shared by the benchmarks: medians, a plain table, and a JSON record in bench-results/."""

from __future__ import annotations

import json
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[1] / "bench-results"


def median_ms(samples: Sequence[float]) -> float:
    return round(statistics.median(samples) * 1000, 3)


def machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [f"| {' | '.join(c.ljust(w) for c, w in zip(row, widths))} |" for row in cells]
    lines.insert(1, f"|{'|'.join('-' * (w + 2) for w in widths)}|")
    return f"{title} ({machine()})\n" + "\n".join(lines)


def save(name: str, record: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **record}, indent=2) + "\n")
    return path
