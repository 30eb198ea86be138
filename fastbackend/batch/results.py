"""The results file of `fastbackend batch`: JSON lines, one per image, appended, resumable.

Exactly once: one writer (the main thread) appends a finished job's lines in one write, and
an image already in the file is never sent again. A second `fastbackend batch` on the same file
is refused while the first runs (an flock on `<file>.lock`, released when the process ends, even
killed). A process killed mid-write can leave a cut last line (no newline): opening the file cuts
it off (that image is then scored again, once). Any other line that is not a result (blank,
foreign, a cut line followed by more) is refused, naming the line: nothing after it is lost.
Keys are written as JSON escapes where a file name is not valid UTF-8, and read back the same.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fastbackend.batch.plan import RECORD_KEYS


class ResultsError(ValueError):
    """The results file cannot be used as it is (a corrupt line, another writer); nothing was sent."""


class ResultsFile:
    """Open with `ResultsFile(path)`: locks it, reads what is done, repairs a cut tail, then appends.

    Raises:
        ResultsError: another process holds the lock, or a line other than the last is not a result.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.done: set[str] = set()
        self.failed: set[str] = set()
        self.duplicates: list[str] = []  # images with more than one line (a file written by something else)
        self.repaired_bytes = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = -1
        self._lock = _lock(self.path.with_name(self.path.name + ".lock"))
        try:
            if self.path.exists():
                self._load()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except BaseException:
            os.close(self._lock)
            raise

    def _load(self) -> None:
        data = self.path.read_bytes()
        good = 0  # bytes up to the end of the last complete, valid line
        lines = data.splitlines(keepends=True)
        for number, line in enumerate(lines, start=1):
            if not line.endswith(b"\n"):  # only the last line can lack one: a write cut short
                break
            try:
                row = json.loads(line)
                key = row["path"]
                if not isinstance(key, str):
                    raise TypeError
            except (ValueError, KeyError, TypeError):
                shown = line[:80].decode("utf-8", "replace").rstrip("\n")
                raise ResultsError(
                    f"{self.path}, line {number}: not a result line ({shown!r}); remove or fix it "
                    f"({len(lines) - number} lines follow it; nothing was sent)"
                ) from None
            if key in self.done:
                self.duplicates.append(key)
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
            fresh.append(_json_line(row))
            written.append(row)
        if fresh:
            data = "".join(fresh).encode("utf-8")
            while data:  # one write on a regular file, in practice; the loop covers a short one
                data = data[os.write(self._fd, data) :]
        return written

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
        if self._lock >= 0:
            os.close(self._lock)  # releases the flock
            self._lock = -1

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


def _lock(path: Path) -> int:
    """An exclusive flock on `path`, held until the descriptor is closed (or the process ends)."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ResultsError(
            f"{path.with_suffix('')}: another `fastbackend batch` is writing it (locked by {path}); "
            "wait for it to finish, or use another --out"
        ) from None
    return fd


def _json_line(row: dict[str, Any]) -> str:
    """One JSON line; a file name that is not valid UTF-8 (a surrogate escape) is written as a JSON
    escape, which reads back as the same key."""
    text = json.dumps(row, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(row, separators=(",", ":"))
    return text + "\n"


def _lines(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as handle:
        yield from handle


def write_csv(jsonl: Path, csv_path: Path) -> int:
    """The results as CSV (top_k, detections and embedding as JSON strings); returns the number of rows."""
    rows = 0
    # surrogateescape: a file name that is not valid UTF-8 is written as its own bytes.
    with open(csv_path, "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
        writer = csv.DictWriter(handle, fieldnames=RECORD_KEYS, extrasaction="ignore")
        writer.writeheader()
        for line in _lines(jsonl):
            row = json.loads(line)
            for key in ("top_k", "detections", "embedding"):
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
