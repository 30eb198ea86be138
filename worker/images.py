"""Decoding base64 images with caps applied before the pixels are decoded.

PNG and JPEG headers carry the image size; it is read from the bytes first, so a
decompression bomb (a tiny file claiming 100k x 100k pixels) is refused without allocating.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import struct

import numpy as np

from worker.errors import ErrorCode, WorkerError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_DATA_URL = re.compile(r"^data:image/[a-zA-Z+.-]+;base64,")
# JPEG start-of-frame markers (baseline, progressive, ...); not DHT (C4), JPG (C8), DAC (CC).
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def image_size(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from a PNG or JPEG header, without decoding pixels.

    Raises:
        ValueError: not a PNG or JPEG, or the header is cut short.
    """
    if data.startswith(PNG_SIGNATURE):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ValueError("PNG header is truncated")
        width, height = struct.unpack(">II", data[16:24])
        return "png", width, height
    if data.startswith(b"\xff\xd8"):
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                i += 1
                continue
            marker = data[i + 1]
            if marker in _JPEG_SOF:
                height, width = struct.unpack(">HH", data[i + 5 : i + 9])
                return "jpeg", width, height
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                i += 1 if marker == 0xFF else 2
                continue
            (length,) = struct.unpack(">H", data[i + 2 : i + 4])
            i += 2 + length
        raise ValueError("JPEG has no frame header")
    raise ValueError("not a PNG or JPEG image")


def decode_image(encoded: str, field: str, max_bytes: int, max_side: int, max_pixels: int) -> np.ndarray:
    """Decode one base64 PNG/JPEG into an HxW or HxWxC uint8 array.

    Raises:
        WorkerError: IMAGE_TOO_LARGE (bytes, side or pixel count over the cap, checked before
            decoding) or IMAGE_DECODE_FAILED (bad base64, not PNG/JPEG, truncated or corrupt).
    """

    text = _DATA_URL.sub("", encoded, count=1)
    if len(text) * 3 // 4 > max_bytes:
        raise WorkerError(ErrorCode.IMAGE_TOO_LARGE, f"{field}: over {max_bytes:,} bytes", field=field)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise WorkerError(ErrorCode.IMAGE_DECODE_FAILED, f"{field}: not valid base64", field=field) from None
    return decode_bytes(data, field, max_bytes, max_side, max_pixels)


def decode_bytes(data: bytes, field: str, max_bytes: int, max_side: int, max_pixels: int) -> np.ndarray:
    """Decode one PNG/JPEG file's bytes (from base64, a URL or a path) under the same caps.

    Raises:
        WorkerError: IMAGE_TOO_LARGE or IMAGE_DECODE_FAILED, as `decode_image`.
    """
    from PIL import Image

    if len(data) > max_bytes:
        raise WorkerError(ErrorCode.IMAGE_TOO_LARGE, f"{field}: over {max_bytes:,} bytes", field=field)
    try:
        kind, width, height = image_size(data)
    except (ValueError, struct.error) as exc:
        raise WorkerError(ErrorCode.IMAGE_DECODE_FAILED, f"{field}: {exc}", field=field) from None
    if width == 0 or height == 0:
        raise WorkerError(ErrorCode.IMAGE_DECODE_FAILED, f"{field}: {kind} header says {width}x{height}", field=field)
    if width > max_side or height > max_side or width * height > max_pixels:
        raise WorkerError(
            ErrorCode.IMAGE_TOO_LARGE,
            f"{field}: {width}x{height} {kind} is over the caps ({max_side} per side, {max_pixels:,} pixels)",
            field=field,
        )
    try:
        with Image.open(io.BytesIO(data), formats=["PNG", "JPEG"]) as image:
            if image.size != (width, height):
                raise ValueError("header and decoder disagree on the size")
            image.load()
            if image.mode not in ("L", "RGB", "RGBA"):
                image = image.convert("RGBA" if "A" in image.mode or image.mode == "P" else "RGB")
            return np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise WorkerError(
            ErrorCode.IMAGE_DECODE_FAILED, f"{field}: corrupt or truncated {kind} ({exc})", field=field
        ) from None
