"""What `fastbackend invoke` shows: a progress line while a job runs, then the answer as a table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TextIO

from fastbackend.tables import table

_SPINNER = "|/-\\"


class ProgressLine:
    """Shows a job's status while it is polled.

    On a terminal one line is redrawn in place (status, seconds, a spinner); elsewhere (CI
    logs, pipes) a line is written only when the status changes, so logs stay short.
    """

    def __init__(self, stream: TextIO, label: str = "") -> None:
        self.stream = stream
        self.label = label
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._last: str | None = None
        self._ticks = 0

    def __call__(self, job_id: str, status: str, elapsed_s: float) -> None:
        text = f"job {job_id}{f' on {self.label}' if self.label else ''}: {status:<11} {elapsed_s:6.1f} s"
        if self.tty:
            self._ticks += 1
            spin = (
                "" if status in ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT") else " " + _SPINNER[self._ticks % 4]
            )
            self.stream.write("\r" + text + spin + "\033[K")
        elif status != self._last:
            self.stream.write(text + "\n")
        self._last = status
        self.stream.flush()

    def close(self) -> None:
        """End the redrawn line so what follows starts on a fresh one."""
        if self.tty and self._last is not None:
            self.stream.write("\n")
            self.stream.flush()


def answer_table(names: Sequence[str], output: dict[str, Any]) -> str:
    """A success answer of any task as a table, one row per image, and a summary line.

    Args:
        names: what to call each image (file names), in the order they were sent.
        output: the worker's success answer: `predictions` (a classifier's ranked labels, or per image
            a list of labelled regions or boxes), or `embeddings` (the `embed` op), with `adapter`
            and `timings`.

    Returns:
        The table as text, e.g. `image  label  score  top-k` rows and
        `adapter: inverted | 2 images | 12.3 ms on the worker`.
    """
    if "embeddings" in output:
        rows = [("image", "dimensions", "encoding", "norm")]
        for name, vector in zip(names, output["embeddings"]):
            values = _vector(vector)
            norm = sum(v * v for v in values) ** 0.5
            rows.append((name, str(len(values)), str(output.get("encoding_format", "float")), f"{norm:.4f}"))
        count = len(output["embeddings"])
    else:
        predictions = output.get("predictions") or []
        rows = [("image", "label", "score", "top-k")]
        for name, prediction in zip(names, predictions):
            ranked = prediction.get("top_k", []) if isinstance(prediction, dict) else prediction
            best = prediction if isinstance(prediction, dict) else (ranked[0] if ranked else {})
            shown = ", ".join(_entry(p) for p in ranked[:5]) + (f" (+{len(ranked) - 5})" if len(ranked) > 5 else "")
            score = best.get("score")
            rows.append((name, str(best.get("label", "-")), "-" if score is None else f"{score:.3f}", shown))
        count = len(predictions)
    lines = table(rows).splitlines()
    summary = [f"adapter: {output.get('adapter') or 'none (base model)'}", f"{count} image(s)"]
    total = (output.get("timings") or {}).get("total_ms")
    if isinstance(total, (int, float)):
        summary.append(f"{total:.1f} ms on the worker")
    lines.append(" | ".join(summary))
    return "\n".join(lines)


def _entry(item: dict[str, Any]) -> str:
    score = item.get("score")
    return f"{item.get('label')} {score:.3f}" if isinstance(score, (int, float)) else str(item.get("label"))


def _vector(vector: Any) -> list[float]:
    if isinstance(vector, str):  # encoding_format base64: little-endian float32
        import base64
        import struct

        data = base64.b64decode(vector)
        return list(struct.unpack(f"<{len(data) // 4}f", data))
    return [float(v) for v in vector]


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def job_summary(job_id: str | None, route: str, request_bytes: int, elapsed_s: float, raw: dict[str, Any]) -> str:
    """One line on how the job went: route, request size, round trip, RunPod's own timings."""
    parts = [f"job {job_id or '-'} via {route}", f"request {_size(request_bytes)}", f"round trip {elapsed_s:.2f} s"]
    # RunPod's API reports queueing and execution times in ms; the local API does not.
    if isinstance(raw.get("delayTime"), (int, float)):
        parts.append(f"queued {raw['delayTime'] / 1000:.2f} s")
    if isinstance(raw.get("executionTime"), (int, float)):
        parts.append(f"ran {raw['executionTime'] / 1000:.2f} s")
    return " | ".join(parts)
