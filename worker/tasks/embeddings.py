"""Embedding answers: L2 normalisation, the two encodings, and their size known in advance.

`float` is a JSON list per image (float32 values, printed as Python prints a float); `base64` is
the vector's little-endian float32 bytes, base64-encoded (what OpenAI-compatible embedding servers
answer): 4 bytes per dimension before base64, about a fifth of the float form.
"""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np

from worker.schema import EmbedOptions

_FLOAT_BYTES = 25  # a float32 printed as a JSON float: at most 24 characters, with its comma
_ENTRY_BYTES = 48  # an entry's brackets or quotes, and the answer's own keys, per image


def answer_bytes(images: int, dimensions: int, encoding_format: str) -> int:
    """An upper bound of the embeddings' JSON size."""
    per_vector = 4 * math.ceil(4 * dimensions / 3) if encoding_format == "base64" else dimensions * _FLOAT_BYTES
    return 256 + images * (per_vector + _ENTRY_BYTES)


def encode(vectors: np.ndarray, options: EmbedOptions, pooling: str) -> dict[str, Any]:
    """The answer's part for (N, D) vectors: `embeddings` (one per image, in order) and how they were made."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if options.normalize:
        norms = np.linalg.norm(vectors.astype(np.float64), axis=1, keepdims=True)
        vectors = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    if options.encoding_format == "base64":
        little = vectors.astype("<f4", copy=False)
        embeddings: list[Any] = [base64.b64encode(row.tobytes()).decode("ascii") for row in little]
    else:
        embeddings = vectors.tolist()
    return {
        "embeddings": embeddings,
        "dimensions": int(vectors.shape[1]) if vectors.ndim == 2 else 0,
        "encoding_format": options.encoding_format,
        "normalized": options.normalize,
        "pooling": pooling,
    }


def decode(embedding: str | list[float]) -> np.ndarray:
    """One answered embedding back to float32 (either encoding): what a client does."""
    if isinstance(embedding, str):
        return np.frombuffer(base64.b64decode(embedding), dtype="<f4").astype(np.float32)
    return np.asarray(embedding, dtype=np.float32)
