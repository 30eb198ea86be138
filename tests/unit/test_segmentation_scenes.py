"""The segmentation demo's digit scenes: deterministic, labels on the ink, the shifted domain inverted."""

from __future__ import annotations

from worker.segmentation.scenes import SCENE_LABELS, digit_scenes


def _digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.images, data.target


def test_scenes_are_deterministic_and_label_the_ink():
    images, targets = _digits()
    first = digit_scenes(images, targets, 12, seed=3)
    again = digit_scenes(images, targets, 12, seed=3)
    assert all((a.image == b.image).all() and (a.mask == b.mask).all() for a, b in zip(first, again))
    for scene in first:
        assert scene.image.shape == (64, 64, 3) and scene.mask.shape == (64, 64)
        assert scene.mask.max() < len(SCENE_LABELS) and (scene.mask > 0).any()
        gray = scene.image[:, :, 0].astype(int)
        assert gray[scene.mask > 0].mean() < gray[scene.mask == 0].mean() - 80  # digits are dark ink


def test_shifted_scenes_are_the_same_scenes_inverted():
    images, targets = _digits()
    plain = digit_scenes(images, targets, 4, seed=5)
    shifted = digit_scenes(images, targets, 4, seed=5, shifted=True)
    for a, b in zip(plain, shifted):
        assert (b.mask == a.mask).all() and (b.image == 255 - a.image).all()
