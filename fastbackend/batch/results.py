"""The results file of `fastbackend batch`: JSON lines, one per image, appended, resumable.

Exactly once: one writer (the main thread) appends a finished job's lines in one write, and
an image already in the file is never sent again. A process killed mid-write can leave a cut
last line; opening the file cuts it off (that image is then scored again, once).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fastbackend.batch.plan import RECORD_KEYS


class ResultsFile:
    """Open with `ResultsFile(path)`: reads what is done, repairs a cut tail, then appends."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.done: set[str] = set()
        self.failed: set[str] = set()
        self.duplicates = 0  # lines for an image already seen (a file written by something else)
        self.repaired_bytes = 0
        if self.path.exists():
            self._load()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _load(self) -> None:
        data = self.path.read_bytes()
        good = 0  # bytes up to the end of the last complete, valid line
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                row = json.loads(line)
                key = row["path"]
            except (ValueError, KeyError, TypeError):
                break
            if key in self.done:
                self.duplicates += 1
            self.done.add(key)
            if row.get("code"):
                self.failed.add(key)
            good += len(line)
        if good < len(data):
            self.repaired_bytes = len(data) - good
            with open(self.path, "r+b") as handle:
                handle.truncate(good)

    def append(self, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append records not yet in the file, in one write; returns those written."""
        fresh, written = [], []
        for row in records:
            if row["path"] in self.done:
                continue  # never twice, whatever the caller does
            self.done.add(row["path"])
            if row.get("code"):
                self.failed.add(row["path"])
            fresh.append(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
            written.append(row)
        if fresh:
            data = "".join(fresh).encode("utf-8")
            while data:  # one write on a regular file, in practice; the loop covers a short one
                data = data[os.write(self._fd, data) :]
        return written

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1

    def forget_failures(self) -> int:
        """Rewrite the file without its failure lines (--retry-failed); returns how many went."""
        if not self.failed:
            return 0
        kept = [line for line in _lines(self.path) if not json.loads(line).get("code")]
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.close(self._fd)
        os.replace(tmp, self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        count = len(self.failed)
        self.done -= self.failed
        self.failed = set()
        return count


def _lines(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as handle:
        yield from handle


def write_csv(jsonl: Path, csv_path: Path) -> int:
    """The results as CSV (top_k and embedding as JSON strings); returns the number of rows."""
    rows = 0
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=RECORD_KEYS, extrasaction="ignore")
        writer.writeheader()
        for line in _lines(jsonl):
            row = json.loads(line)
            for key in ("top_k", "embedding"):
                if row.get(key) is not None:
                    row[key] = json.dumps(row[key], separators=(",", ":"))
            writer.writerow(row)
            rows += 1
    return rows


def write_npy(jsonl: Path, npy_path: Path, keys: Sequence[str]) -> int:
    """The embeddings of the results file as one (N, D) float32 array in `keys`' (the dataset's) order,
    and beside it `<name>.paths.txt`, the image of each row; images without a vector are left out.
    Returns N."""
    import numpy as np

    vectors: dict[str, list[float]] = {}
    for line in _lines(jsonl):
        row = json.loads(line)
        if row.get("embedding") is not None:
            vectors[row["path"]] = row["embedding"]
    kept = [key for key in keys if key in vectors]
    dims = len(vectors[kept[0]]) if kept else 0
    np.save(npy_path, np.asarray([vectors[k] for k in kept], dtype=np.float32).reshape(len(kept), dims))
    npy_path.with_suffix(".paths.txt").write_text("".join(f"{key}\n" for key in kept), encoding="utf-8")
    return len(kept)
