"""FASTBACKEND_FAST_DECODE: off is the exact path, on stays within the bound docs/explanation/decoding.md documents.

Tiny models of three resize rules (tests/fixtures/architectures.py: height/width, ConvNeXt's
crop_pct, shortest_edge + crop) get the parity photographs as JPEG (tests/fixtures/photos.py,
with one stored turned and made upright by its EXIF orientation) through two in-process workers,
fast decode off and on. Off must equal the model's AutoImageProcessor within the parity test's
tolerance; on must stay within FAST_BOUND of it and give the exact path's top-1 on every photo.
benchmarks/fast_decode.py measures the same on every architecture, ViT-base and 1-12 MP photos.
"""

from __future__ import annotations

import pytest
from fixtures.architectures import build
from fixtures.photos import fast_decode_photos, fast_decode_rows

PARITY_TOLERANCE = 1e-3  # tests/worker/test_preprocess_parity.py's
FAST_BOUND = 0.15  # normalised units (about 10 of 255 levels before normalising), docs/explanation/decoding.md


@pytest.mark.parametrize("name", ["vit", "convnext", "dinov2"])
def test_fast_decode_off_is_exact_and_on_stays_within_the_bound(name, tmp_path):
    rows = fast_decode_rows(build(name, tmp_path / name), fast_decode_photos(full=False))
    for photo, exact, fast, same in rows:
        print(f"fast decode | {name} | {photo} | exact {exact:.1e} | fast {fast:.3f} | same top-1: {same}")
    assert all(exact <= PARITY_TOLERANCE for _, exact, _, _ in rows), rows
    assert all(fast <= FAST_BOUND and same for _, _, fast, same in rows), rows
    assert any(fast > 0 for _, _, fast, _ in rows), "nothing was reduced: the test would not see a wrong reduction"
