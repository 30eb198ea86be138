"""Digit scenes: one to three of scikit-learn's 8x8 digits on a canvas, a box and a class each.

The embedded detection demo's data, deterministic from a seed. `digit_scenes(digits, labels, ...)`
takes the digit images (values 0-16, as `sklearn.datasets.load_digits().images` holds them) so the
runtime never imports scikit-learn. `shifted=True` draws the domain an adapter is for: light digits
on a dark, noisy canvas, where a base trained on dark-on-light scenes fails.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Scene:
    image: np.ndarray  # uint8 (size, size, 3)
    boxes: tuple[tuple[float, float, float, float], ...]  # [x, y, w, h] pixels
    labels: tuple[int, ...]


def _overlaps(box: tuple[int, int, int], placed: list[tuple[int, int, int]]) -> bool:
    x, y, s = box
    return any(x < px + ps and px < x + s and y < py + ps and py < y + s for px, py, ps in placed)


def digit_scenes(
    digits: np.ndarray, labels: np.ndarray, count: int, *, seed: int, size: int = 96, shifted: bool = False
) -> list[Scene]:
    """`count` scenes of `size` x `size` pixels, each with 1-3 non-overlapping digits of 20-36 px."""
    rng = np.random.default_rng(seed)
    scenes = []
    for _ in range(count):
        canvas = np.full((size, size), 20 if shifted else 235, np.float32)
        if shifted:
            canvas += rng.normal(0, 12, canvas.shape)
        placed: list[tuple[int, int, int]] = []
        classes = []
        for _ in range(int(rng.integers(1, 4))):
            side = int(rng.integers(20, 37))
            for _attempt in range(20):
                box = (int(rng.integers(0, size - side)), int(rng.integers(0, size - side)), side)
                if not _overlaps(box, placed):
                    break
            else:
                continue
            index = int(rng.integers(0, len(digits)))
            glyph = Image.fromarray((digits[index] * 255 / 16).astype(np.uint8)).resize((side, side), Image.BILINEAR)
            ink = np.asarray(glyph, np.float32) / 255
            x, y, _ = box
            region = canvas[y : y + side, x : x + side]
            target = 255.0 if shifted else 0.0
            canvas[y : y + side, x : x + side] = region * (1 - ink) + target * ink
            placed.append(box)
            classes.append(int(labels[index]))
        image = np.repeat(np.clip(canvas, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
        boxes = tuple((float(x), float(y), float(s), float(s)) for x, y, s in placed)
        scenes.append(Scene(image, boxes, tuple(classes)))
    return scenes
