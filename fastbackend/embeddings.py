"""Evaluating embeddings on a labelled dataset: nearest-neighbour recall@k and a 2-D projection.

recall@k: for each query vector, are any of its k nearest gallery vectors (cosine similarity)
of its class? The mean over queries. The projection is PCA (numpy's SVD), enough to see whether
classes separate; notebook 02 plots it coloured by class. `embed_files` gets the vectors as the
served `embed` op answers them, from any job handler (a set-up `worker.runtime.Worker`'s `handle`).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from worker.tasks.embeddings import decode


class EmbedFailed(RuntimeError):
    """An `embed` job answered an error; the message is the worker's (its code and the field)."""


def embed_files(
    handle: Callable[[dict[str, Any]], dict[str, Any]],
    paths: Sequence[str | Path],
    adapter: str | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """The (N, D) float32 embeddings of image files, `batch_size` per `embed` job, in order.

    Each file's bytes go as base64, as a client sends them; the answers come back as `base64`
    vectors (little-endian float32), decoded exactly.

    Raises:
        EmbedFailed: a job answered an error (an unreadable image, an unknown adapter ...).
    """
    chunks = []
    for start in range(0, len(paths), batch_size):
        images = [base64.b64encode(Path(p).read_bytes()).decode("ascii") for p in paths[start : start + batch_size]]
        job = {"op": "embed", "images": images, "encoding_format": "base64"}
        answer = handle({"id": f"embed-{start}", "input": {**job, **({"adapter": adapter} if adapter else {})}})
        if answer.get("status") != "success":
            raise EmbedFailed(f"images {start}..{start + len(images) - 1}: {answer.get('error')}")
        chunks.append(np.stack([decode(e) for e in answer["embeddings"]]))
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)


def _unit(vectors: np.ndarray) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float64)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def recall_at_k(
    gallery: np.ndarray,
    gallery_labels: Sequence[int],
    query: np.ndarray,
    query_labels: Sequence[int],
    ks: Sequence[int] = (1, 5),
) -> dict[int, float]:
    """{k: recall@k} of `query` against `gallery` by cosine similarity."""
    similarity = _unit(query) @ _unit(gallery).T
    order = np.argsort(-similarity, axis=1, kind="stable")
    neighbours = np.asarray(gallery_labels)[order]
    truth = np.asarray(query_labels)[:, None]
    return {k: float((neighbours[:, :k] == truth).any(axis=1).mean()) for k in ks}


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """The vectors projected on their first two principal components, (N, 2)."""
    centred = np.asarray(vectors, dtype=np.float64) - np.mean(vectors, axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    return centred @ components[:2].T
