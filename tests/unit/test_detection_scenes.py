"""Digit scenes: deterministic, boxes inside the canvas and apart, ink where the boxes are."""

from __future__ import annotations

import numpy as np

from worker.detection.scenes import digit_scenes


def _digits() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 17, (30, 8, 8)).astype(np.float64), np.arange(30) % 10


def test_scenes_are_deterministic_with_one_to_three_boxes_inside_and_apart() -> None:
    digits, labels = _digits()
    scenes = digit_scenes(digits, labels, 40, seed=3)
    again = digit_scenes(digits, labels, 40, seed=3)
    assert all(np.array_equal(a.image, b.image) and a.boxes == b.boxes for a, b in zip(scenes, again))
    for scene in scenes:
        assert scene.image.shape == (96, 96, 3) and scene.image.dtype == np.uint8
        assert 1 <= len(scene.boxes) <= 3 and len(scene.labels) == len(scene.boxes)
        for i, (x, y, w, h) in enumerate(scene.boxes):
            assert 0 <= x and 0 <= y and x + w <= 96 and y + h <= 96 and 20 <= w == h <= 36
            for x2, y2, w2, h2 in scene.boxes[i + 1 :]:
                assert x + w <= x2 or x2 + w2 <= x or y + h <= y2 or y2 + h2 <= y


def test_the_shifted_domain_is_light_ink_on_a_dark_canvas() -> None:
    digits, labels = _digits()
    plain, shifted = (
        digit_scenes(digits, labels, 5, seed=1)[0],
        digit_scenes(digits, labels, 5, seed=1, shifted=True)[0],
    )
    assert plain.image.mean() > 150 > 100 > shifted.image.mean()
