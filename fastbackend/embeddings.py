"""Evaluating embeddings on a labelled dataset: nearest-neighbour recall@k and a 2-D projection.

recall@k: for each query vector, are any of its k nearest gallery vectors (cosine similarity)
of its class? The mean over queries. The projection is PCA (numpy's SVD), enough to see whether
classes separate; notebook 02 plots it coloured by class.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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
