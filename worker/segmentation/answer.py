"""Semantic segmentation answers: class maps from logits, and the masks built from them.

Pure functions (numpy, Pillow, and torch's tensors for the upsampling) that the
`image-segmentation` task calls after its forward. They follow transformers exactly:
`post_process_semantic_segmentation` upsamples each image's logits bilinearly
(`align_corners=False`) to the target size and takes the argmax over classes; the
`image-segmentation` pipeline then answers one `{"label", "score": None, "mask"}` per class
present, in ascending class id, each mask mode L with 0/255.

Two answer forms:
- "masks": the pipeline's list, each mask a base64 PNG;
- "compact": one PNG of class ids (8-bit, 16-bit past 256 classes) and each label's pixel area.

and two sizes: "original" (the upright photo, as the pipeline) or "model" (the logits' own
grid, as `post_process_semantic_segmentation` gives it without target sizes).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

Form = Literal["masks", "compact"]
OutputSize = Literal["original", "model"]

# Output rows upsampled at once: a band holds classes x rows x width float32 values. 64 rows of a
# 4000-wide photo with 150 classes is 150 MB; the band shrinks with the class count times width.
_BAND_VALUES = 8_000_000
# PNG deflate level: 1 encodes a 12 MP mask in a tenth of level 6's time for a few % more bytes.
PNG_COMPRESS_LEVEL = 1
# What an estimate assumes a mask PNG costs per pixel, in bits: measured masks of photos' segments
# take 0.01-0.2; a mask of noise can take more, and the real answer is measured again (check_output).
MASK_BITS_PER_PIXEL = 0.5
_PNG_OVERHEAD = 80  # signature, IHDR, IDAT and IEND chunk headers, zlib header and checksum
_ENTRY_BYTES = 48  # {"label": , "score": null, "mask": ""} with its separators
# A presigned URL in the answer: endpoint, bucket, key and the X-Amz-* query (about 500-700 bytes).
URL_BYTES = 1536


def _source_index(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """torch's bilinear source indices and weights (align_corners=False), in float32 as its CPU kernel.

    Returns (i0, i1, lambda1) per output index: value = (1 - l1) * x[i0] + l1 * x[i1].
    """
    scale = np.float32(in_size / out_size)
    dst = np.arange(out_size, dtype=np.float32)
    src = np.maximum(scale * (dst + np.float32(0.5)) - np.float32(0.5), np.float32(0))
    i0 = src.astype(np.int64)  # floor: src >= 0
    i0 = np.minimum(i0, in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    return i0, i1, (src - i0.astype(np.float32)).astype(np.float32)


def _weights(in_size: int, out_size: int) -> np.ndarray:
    """The (out, in) matrix of bilinear weights: two non-zeros per row (one at an edge)."""
    i0, i1, l1 = _source_index(in_size, out_size)
    matrix = np.zeros((out_size, in_size), dtype=np.float32)
    rows = np.arange(out_size)
    matrix[rows, i0] = 1 - l1
    np.add.at(matrix, (rows, i1), l1)  # i0 == i1 at the last edge: the weights add to 1
    return matrix


def upsampled_argmax(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The class map of (C, h, w) logits upsampled to `size` = (H, W): F.interpolate + argmax(0).

    Computed in bands of output rows so that a 12 MP photo never holds C x H x W floats; the
    interpolation is torch's (x first, then y, its float32 weights, as two matrix products), so the class map equals
    `post_process_semantic_segmentation`'s up to argmax ties. Returns int64 (H, W).
    """
    import torch

    classes, in_h, in_w = logits.shape
    out_h, out_w = size
    source = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))
    across = torch.from_numpy(_weights(in_w, out_w)).T.contiguous()  # (w, W): rows of x weights
    down = torch.from_numpy(_weights(in_h, out_h))  # (H, h)
    out = np.empty((out_h, out_w), dtype=np.int64)
    band = max(1, _BAND_VALUES // max(1, classes * out_w))
    with torch.inference_mode():
        for top in range(0, out_h, band):
            rows = down[top : top + band]
            used = torch.nonzero(rows.any(0)).flatten()
            first, last = int(used[0]), int(used[-1]) + 1
            wide = source[:, first:last] @ across  # (C, rows used, W)
            out[top : top + band] = torch.matmul(rows[:, first:last], wide).argmax(0).numpy()
    return out


def class_map(logits: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """One image's class ids: at `size` (upsampled) or, with None, on the logits' own grid."""
    if size is None:
        return logits.argmax(0)
    return upsampled_argmax(logits, size)


def png_bytes(array: np.ndarray) -> bytes:
    """A 2-D uint8 (mode L) or uint16 (mode I;16) array as PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()  # fromarray picks L for uint8, I;16 for uint16
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def mask_pngs(ids: np.ndarray) -> list[tuple[int, bytes]]:
    """(class id, PNG of its mask, mode L 0/255) per class present, in ascending id, as the pipeline."""
    present = np.unique(ids)
    return [(int(label), png_bytes(np.where(ids == label, 255, 0).astype(np.uint8))) for label in present]


def label_name(labels: Sequence[str], class_id: int) -> str:
    return labels[class_id] if 0 <= class_id < len(labels) else str(class_id)


def masks_answer(ids: np.ndarray, labels: Sequence[str]) -> list[dict[str, Any]]:
    """The `image-segmentation` pipeline's answer for one image, masks as base64 PNGs."""
    return [{"label": label_name(labels, i), "score": None, "mask": b64(png)} for i, png in mask_pngs(ids)]


def class_map_png(ids: np.ndarray, num_labels: int) -> bytes:
    """The class ids as one PNG: 8-bit (mode L) up to 256 classes, 16-bit (I;16) past them."""
    dtype = np.uint8 if num_labels <= 256 else np.uint16
    return png_bytes(ids.astype(dtype))


def label_areas(ids: np.ndarray, labels: Sequence[str]) -> dict[str, int]:
    """Pixels per label present, in ascending class id."""
    present, counts = np.unique(ids, return_counts=True)
    return {label_name(labels, int(i)): int(n) for i, n in zip(present, counts)}


def compact_answer(ids: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """One image as a class-id PNG (value = index into `labels`) and each present label's area."""
    return {
        "size": [int(ids.shape[0]), int(ids.shape[1])],
        "class_map": b64(class_map_png(ids, len(labels))),
        "areas": label_areas(ids, labels),
    }


def uploaded_masks_answer(ids: np.ndarray, labels: Sequence[str], put: Callable[[str, bytes], str]) -> list[dict]:
    """The pipeline's list with each mask PNG put out of band: `mask_url` (put's answer) for `mask`."""
    return [
        {"label": label_name(labels, i), "score": None, "mask_url": put(f"{i}.png", png)} for i, png in mask_pngs(ids)
    ]


def uploaded_compact_answer(ids: np.ndarray, labels: Sequence[str], put: Callable[[str, bytes], str]) -> dict:
    """The compact form with its class-id PNG put out of band: `class_map_url` for `class_map`."""
    return {
        "size": [int(ids.shape[0]), int(ids.shape[1])],
        "class_map_url": put("class_map.png", class_map_png(ids, len(labels))),
        "areas": label_areas(ids, labels),
    }


def _b64_len(n: int) -> int:
    return 4 * -(-n // 3)


def estimate_png_bytes(height: int, width: int, bits_per_pixel: float) -> int:
    return int(height * width * bits_per_pixel / 8) + height + _PNG_OVERHEAD


def estimate_image_bytes(
    height: int, width: int, form: Form, labels: Sequence[str], present: int | None = None, uploaded: bool = False
) -> int:
    """The JSON bytes one image's answer is expected to take, at its output size (height, width).

    `present` is the number of classes in its map when known (after the forward); before it, every
    label of the model up to the pixel count is assumed, a bound a job can trust to be refused early.
    `uploaded`: the PNGs are in a bucket and the answer holds their URLs.
    """
    longest = max((len(label) for label in labels), default=8) + 8  # quoted, escapes aside
    count = present if present is not None else min(len(labels) or 1, height * width)
    if uploaded:
        return count * (longest + 24) + 64 + URL_BYTES if form == "compact" else count * (URL_BYTES + longest + 52)
    if form == "compact":
        # One map holds every region's boundary once, as the masks together hold each twice.
        bits = MASK_BITS_PER_PIXEL * (1 if len(labels) <= 256 else 2)
        return _b64_len(estimate_png_bytes(height, width, bits)) + count * (longest + 24) + 64
    mask = _b64_len(estimate_png_bytes(height, width, MASK_BITS_PER_PIXEL))
    return count * (mask + longest + _ENTRY_BYTES)


def output_shape(original: tuple[int, int], model_grid: tuple[int, int], output_size: OutputSize) -> tuple[int, int]:
    """(height, width) of the answer's maps: the upright photo's, or the logits' grid."""
    return original if output_size == "original" else model_grid
