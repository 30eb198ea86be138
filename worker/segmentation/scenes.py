"""Digit scenes for segmentation: one to three of scikit-learn's 8x8 digits on a textured canvas,
each pixel labelled background (0) or its digit (1 + the digit).

The embedded segmentation demo's data, deterministic from a seed. `digit_scenes(digits, labels, ...)`
takes the digit images (values 0-16, as `sklearn.datasets.load_digits().images` holds them) so the
runtime never imports scikit-learn. `shifted=True` draws the domain an adapter is for: the same
scenes inverted (light digits on a dark texture), where a base trained on dark-on-light fails.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

SCENE_LABELS = ("background", *(f"digit {d}" for d in range(10)))
INK_THRESHOLD = 0.4  # a pixel at least 40% ink is the digit's


@dataclass(frozen=True)
class SegmentationScene:
    image: np.ndarray  # uint8 (size, size, 3)
    mask: np.ndarray  # uint8 (size, size): 0 background, 1 + digit


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A light background with soft stripes and grain, so background is not one flat value."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle, period = rng.uniform(0, np.pi), rng.uniform(6, 18)
    stripes = 12 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    return 215 + stripes + rng.normal(0, 6, (size, size))


def digit_scenes(
    digits: np.ndarray, labels: np.ndarray, count: int, *, seed: int, size: int = 64, shifted: bool = False
) -> list[SegmentationScene]:
    """`count` scenes of `size` x `size` pixels with 1-3 digits of 3/8 to 5/8 of `size`, possibly overlapping
    (a later digit's ink over an earlier one's)."""
    rng = np.random.default_rng(seed)
    scenes = []
    for _ in range(count):
        canvas = _texture(rng, size)
        mask = np.zeros((size, size), np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            side = int(rng.integers(size * 3 // 8, size * 5 // 8 + 1))
            x, y = (int(v) for v in rng.integers(0, size - side, 2))
            index = int(rng.integers(0, len(digits)))
            glyph = Image.fromarray((digits[index] * 255 / 16).astype(np.uint8)).resize((side, side), Image.BILINEAR)
            ink = np.asarray(glyph, np.float32) / 255
            region = canvas[y : y + side, x : x + side]
            canvas[y : y + side, x : x + side] = region * (1 - ink) + 10 * ink  # dark ink
            mask[y : y + side, x : x + side][ink >= INK_THRESHOLD] = 1 + int(labels[index])
        gray = np.clip(canvas, 0, 255).astype(np.uint8)
        if shifted:
            gray = 255 - gray
        scenes.append(SegmentationScene(np.repeat(gray[:, :, None], 3, axis=2), mask))
    return scenes
