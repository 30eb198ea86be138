"""The decode step (worker/decoding.py), model-free: formats, modes, orientation, transparency, limits."""

from __future__ import annotations

import base64
import io
import time
from dataclasses import replace

import numpy as np
import pytest
from fixtures import images as gen
from PIL import Image
from transformers.image_transforms import convert_to_rgb

from worker.config import WorkerConfig
from worker.decoding import Reduction, decode_base64, decode_image, jpeg_scans, read_header
from worker.errors import ErrorCode, WorkerError

LIMITS = WorkerConfig()
RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (24, 40, 3), dtype=np.uint8)
GRAY = RNG.integers(0, 256, (24, 40), dtype=np.uint8)


def decode(data: bytes, channels: int = 3, **limits) -> np.ndarray:
    image = decode_image(data, channels=channels, limits=replace(LIMITS, **limits))
    assert image.mode == ("RGB" if channels == 3 else "L")
    return np.asarray(image)


def refused(data: bytes, code: ErrorCode, **limits) -> str:
    with pytest.raises(WorkerError) as caught:
        decode(data, **limits)
    assert caught.value.code is code, caught.value
    return caught.value.message


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "BMP", "TIFF"])
def test_lossless_formats_decode_exactly(fmt):
    options = {"lossless": True} if fmt == "WEBP" else {}
    assert np.array_equal(decode(gen.encode(Image.fromarray(RGB), fmt, **options)), RGB)


def test_jpeg_decodes_close_to_its_source():
    assert (
        np.abs(decode(gen.encode(Image.fromarray(RGB), "JPEG", quality=100, subsampling=0)).astype(int) - RGB).mean()
        < 8
    )


def test_gif_first_frame_and_tiff_first_page():
    other = 255 - GRAY
    assert np.array_equal(decode(gen.gif_two_frames(GRAY, other), channels=1), GRAY)
    assert np.array_equal(decode(gen.tiff_two_pages(GRAY, other), channels=1), GRAY)


def test_16_bit_png_is_scaled_not_clipped():
    # Pillow's own convert("L") clips 16-bit values at 255: almost every pixel turns white.
    assert np.array_equal(decode(gen.png_16bit_gray(GRAY), channels=1), GRAY)
    assert np.array_equal(decode(gen.png_16bit_gray(GRAY)), np.repeat(GRAY[..., None], 3, axis=2))


def test_float_tiff_in_0_1_is_scaled():
    assert np.abs(decode(gen.tiff_float_gray(GRAY), channels=1).astype(int) - GRAY).max() <= 1


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied(orientation):
    upright = Image.fromarray(RGB)
    assert np.array_equal(decode(gen.exif_rotated(upright, "PNG", orientation)), RGB)


def test_exif_rotated_jpeg_comes_out_upright():
    out = decode(gen.exif_rotated(Image.fromarray(RGB), "JPEG", 6))
    assert out.shape == RGB.shape


def test_alpha_is_composited_on_white_as_transformers_does():
    # A digit drawn only in alpha, in black ink: on white it reads as a dark digit on white.
    data = gen.alpha_drawn(GRAY)
    assert np.array_equal(decode(data, channels=1), 255 - GRAY)
    expected = np.asarray(convert_to_rgb(Image.open(__import__("io").BytesIO(data)), return_numpy=True))
    assert np.array_equal(decode(data), expected)


def test_palette_with_transparency_matches_transformers_over_several_bands():
    # 1,100 rows: more than two bands of the banded composite.
    rgba = RNG.integers(0, 256, (1100, 30, 4), dtype=np.uint8)
    image = Image.fromarray(rgba, "RGBA").convert("P", palette=Image.Palette.ADAPTIVE)
    image.info["transparency"] = 3
    data = gen.encode(image, "PNG", transparency=3)
    import io

    expected = np.asarray(convert_to_rgb(Image.open(io.BytesIO(data)), return_numpy=True))
    assert np.array_equal(decode(data), expected)
    rgba_data = gen.encode(Image.fromarray(rgba, "RGBA"), "PNG")
    assert np.array_equal(
        decode(rgba_data), np.asarray(convert_to_rgb(Image.open(io.BytesIO(rgba_data)), return_numpy=True))
    )


def test_gray_from_rgb_is_pillows_formula():
    expected = np.asarray(Image.fromarray(RGB).convert("L"))
    assert np.array_equal(decode(gen.encode(Image.fromarray(RGB), "PNG"), channels=1), expected)


def test_header_limits_refuse_before_decoding():
    started = time.perf_counter()
    assert "over the caps" in refused(gen.png_header_only(100_000, 100_000), ErrorCode.IMAGE_TOO_LARGE)
    refused(gen.png_header_only(5000, 10), ErrorCode.IMAGE_TOO_LARGE)  # one side over 4096
    refused(gen.encode(Image.fromarray(RGB), "PNG"), ErrorCode.IMAGE_TOO_LARGE, max_image_bytes=100)
    assert time.perf_counter() - started < 1
    assert read_header(gen.png_header_only(300, 200), limits=LIMITS).pixels == 60_000


def test_jpeg_scan_bomb_is_refused_from_its_markers():
    bomb = gen.jpeg_scan_bomb(side=64, repeats=20_000)
    assert jpeg_scans(bomb, 10**6) == jpeg_scans(gen.jpeg_scan_bomb(side=64, repeats=0), 99) + 20_000
    started = time.perf_counter()
    assert "scans" in refused(bomb, ErrorCode.IMAGE_TOO_LARGE)
    assert time.perf_counter() - started < 0.5
    assert decode(gen.jpeg_scan_bomb(side=64, repeats=3)).shape == (64, 64, 3)  # a few extra scans are fine


@pytest.mark.parametrize(
    "data",
    [b"", b"GIF89a", b"not an image at all", gen.truncated(gen.encode(Image.fromarray(RGB), "PNG"))],
    ids=["empty", "gif-header-only", "text", "truncated-png"],
)
def test_corrupt_data_is_decode_failed(data):
    refused(data, ErrorCode.IMAGE_DECODE_FAILED)


@pytest.mark.parametrize(
    "text",
    [
        "{b}",
        " {b}\n",
        "{wrapped}",
        "{urlsafe}",
        "{unpadded}",
        "data:image/png;base64,{b}",
        "DATA:IMAGE/PNG;BASE64,{b}",
        "data:image/png;name=digit.png;base64,{b}",
    ],
)
def test_lenient_base64(text):
    raw = bytes(range(256)) * 3 + b"\xfb\xff"
    b = base64.b64encode(raw).decode()
    wrapped = "\n".join(b[i : i + 76] for i in range(0, len(b), 76)) + "\n"
    urlsafe = base64.urlsafe_b64encode(raw).decode()
    assert decode_base64(text.format(b=b, wrapped=wrapped, urlsafe=urlsafe, unpadded=b.rstrip("="))) == raw


@pytest.mark.parametrize("text", ["iVBORw0KGgo###", "abcde", "data:image/png;base64,@@@@"])
def test_strict_where_base64_is_not(text):
    with pytest.raises(WorkerError) as caught:
        decode_base64(text)
    assert caught.value.code is ErrorCode.IMAGE_DECODE_FAILED


# -- fast decode (FASTBACKEND_FAST_DECODE=on): reduced, then resized to what the model's resize makes
SMOOTH = np.asarray(Image.fromarray(RGB).resize((1200, 900), Image.Resampling.BICUBIC))  # a photo-like gradient


def fixed_target(width: int, height: int) -> Reduction:
    return Reduction(lambda w, h: (width, height), Image.Resampling.BILINEAR)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])  # JPEG: DCT scaling (draft); PNG: Image.reduce
def test_fast_decode_reduces_then_resizes_to_the_target_close_to_the_exact_path(fmt):
    data = gen.encode(Image.fromarray(SMOOTH), fmt)
    fast = decode_image(data, channels=3, limits=LIMITS, reduction=fixed_target(100, 60))
    exact = decode_image(data, channels=3, limits=LIMITS).resize((100, 60), Image.Resampling.BILINEAR)
    assert fast.size == (100, 60)
    assert np.abs(np.asarray(fast, np.int16) - np.asarray(exact, np.int16)).max() <= 8


def test_fast_decode_reads_the_target_of_an_exif_turned_photo_upright():
    # Upright 300 wide x 1200 high (stored 1200x300, EXIF 6); the model wants 100x25 of it. The upright
    # width allows no reduction (300 < 2 x 2 x 100): the exact pixels come out. Read in the stored
    # orientation, the same target would allow DCT scale 1/4 (1200 / 200, 300 / 50).
    upright = Image.fromarray(SMOOTH).crop((0, 0, 1200, 300)).transpose(Image.Transpose.ROTATE_90)
    data = gen.exif_rotated(upright, "JPEG", 6)
    fast = decode_image(data, channels=3, limits=LIMITS, reduction=fixed_target(100, 25))
    assert fast.size == (300, 1200) and np.array_equal(np.asarray(fast), decode(data))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_fast_decode_leaves_images_under_twice_the_target_alone(fmt):
    data = gen.encode(Image.fromarray(GRAY), fmt)  # 40x24, a model input of 16x16: nothing to reduce
    fast = decode_image(data, channels=1, limits=LIMITS, reduction=fixed_target(16, 16))
    assert np.array_equal(np.asarray(fast), decode(data, channels=1))


def test_png_text_chunks_are_dropped_before_pillow_decompresses_them():
    """64 zTXt chunks of 1 MB each (~64 KB on the wire): the same pixels, without the 62 MB."""
    import tracemalloc

    from PIL.PngImagePlugin import PngInfo

    text = PngInfo()
    for i in range(64):
        text.add_text(f"k{i}", "a" * 1_000_000, zip=True)
    text.add_itxt("xmp", "b" * 100_000, zip=True)
    text.add_text("plain", "c" * 10_000)
    plain, bomb = io.BytesIO(), io.BytesIO()
    Image.fromarray(RGB).save(plain, format="PNG")
    Image.fromarray(RGB).save(bomb, format="PNG", pnginfo=text)
    assert len(bomb.getvalue()) < 100_000
    tracemalloc.start()
    try:
        pixels = decode(bomb.getvalue())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(pixels, decode(plain.getvalue())) and np.array_equal(pixels, RGB)
    assert peak < 2 * 2**20, f"{peak / 2**20:.1f} MB traced"


@pytest.mark.parametrize("cut", [9, 20, 33, 500])
def test_a_truncated_png_with_text_is_still_decode_failed(cut):
    from PIL.PngImagePlugin import PngInfo

    text = PngInfo()
    text.add_text("k", "a" * 100, zip=True)
    buffer = io.BytesIO()
    Image.fromarray(GRAY).save(buffer, format="PNG", pnginfo=text)
    refused(buffer.getvalue()[:cut], ErrorCode.IMAGE_DECODE_FAILED)
