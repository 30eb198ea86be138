"""The decode step: the bytes of one image in, an 8-bit "RGB" or "L" PIL image out.

Serving (predict, preprocess), datasets and the notebooks all decode through `decode_image`, and
the own-model parity reference starts from its output, so an image means the same pixels on
every surface. What it does, in order:

1. header checks, before any pixel is decoded (`read_header`): encoded size, format (PNG, JPEG,
   WEBP, BMP, GIF, TIFF), width, height and pixel count, and for JPEG the number of scans (a
   progressive JPEG repeating one tiny scan thousands of times costs seconds per image);
2. the first frame (GIF, animated WEBP) or page (TIFF), as Pillow opens it; a PNG's text chunks
   are dropped first (`without_png_text`: no pixel depends on them);
3. 16-bit and float modes scaled to 8 bits, never clipped (see `_scaled_to_8_bits`);
4. palette expanded and transparency composited on white exactly as transformers'
   `convert_to_rgb` does (alpha_composite over opaque white, then RGB);
5. "L" from "RGB" by Pillow's ITU-R 601-2 formula (L = R*299/1000 + G*587/1000 + B*114/1000);
6. EXIF orientation applied last, as `PIL.ImageOps.exif_transpose` would.

With a `Reduction` (FASTBACKEND_FAST_DECODE=on) the image is decoded reduced: a JPEG by libjpeg's
DCT scaling (`Image.draft`: 1/2, 1/4 or 1/8, skipping most of the decoding work), then any image
by `Image.reduce` (box average), never below `REDUCE_GAP` times the size the model's resize makes
of it on either side; the reduced image is then resized here, with the model's filter, to the
size that resize would make of the full image (so the geometry, aspect and crop, stays exact and
only the antialiasing differs), and the model's own resize step has nothing left to do.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from worker.errors import ErrorCode, WorkerError

FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")  # a phone's MPO JPEG opens as JPEG (format "MPO")
FORMAT_NAMES = "PNG, JPEG, WEBP, BMP, GIF or TIFF"
REDUCE_GAP = 2  # a reduced image keeps at least this many times the resize's target per side (PIL's thumbnail uses 2)
_TURNED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_BAND_ROWS = 512  # transparency is composited in bands, so peak memory is one band of RGBA, not the image

# A data: URL prefix, case-insensitive, with any parameters (`;name=a.png`, `;charset=...`).
_DATA_URL = re.compile(r"^\s*data:[a-z0-9.+/-]*(?:;[^,;]*)*;base64,", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")
_URL_SAFE = str.maketrans("-_", "+/")
# Inside JPEG entropy-coded data 0xFF is followed by 0x00 (stuffing) or RSTn; anything else is a marker.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn: no length field
_JPEG_SOS, _JPEG_EOI = 0xDA, 0xD9
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
# EXIF Orientation -> the transpose that undoes it (PIL.ImageOps.exif_transpose's table).
_EXIF_TRANSPOSE = {
    2: "FLIP_LEFT_RIGHT",
    3: "ROTATE_180",
    4: "FLIP_TOP_BOTTOM",
    5: "TRANSPOSE",
    6: "ROTATE_270",
    7: "TRANSVERSE",
    8: "ROTATE_90",
}


class DecodeLimits(Protocol):
    """What `decode_image` checks before decoding; `worker.config.WorkerConfig` is one."""

    max_image_bytes: int
    max_image_side: int
    max_image_pixels: int
    max_jpeg_scans: int


@dataclass(frozen=True)
class Header:
    """What the header of an image says, read without decoding its pixels."""

    format: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def decode_base64(text: str) -> bytes:
    """The bytes of a base64 image, leniently where the standards allow it.

    Accepts a data: URL prefix (any case, any parameters), whitespace and line breaks anywhere
    (what `base64` and MIME write), the URL-safe alphabet (RFC 4648 section 5) and missing padding.
    Anything else outside the alphabet is refused.

    Raises:
        WorkerError: IMAGE_DECODE_FAILED, the text is not base64.
    """
    text = _DATA_URL.sub("", text, count=1)
    # What clients send, plain padded base64, decoded in C first: the lenient steps below scan the
    # text with a regular expression (~60 ms for a 12 MP photo's 2.6 MB).
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        pass  # the same bytes as below for every text this accepts; the rest goes the lenient way
    if _WHITESPACE.search(text):
        text = _WHITESPACE.sub("", text)
    text = text.translate(_URL_SAFE)
    if len(text) % 4 == 1:
        raise WorkerError(ErrorCode.IMAGE_DECODE_FAILED, "not valid base64 (its length is not possible)")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise WorkerError(ErrorCode.IMAGE_DECODE_FAILED, "not valid base64") from None


def jpeg_scans(data: bytes, stop_after: int) -> int:
    """How many scans (SOS segments) the first JPEG in `data` has, counting at most `stop_after` + 1.

    Walks the marker segments by their lengths, and the entropy-coded data after each SOS with one
    regular-expression search, so a 10 MB file costs milliseconds.
    """
    scans, i, end = 0, 2, len(data)
    while i + 1 < end and scans <= stop_after:
        if data[i] != 0xFF:  # garbage between segments: resynchronise on the next marker
            found = _JPEG_MARKER.search(data, i)
            if found is None:
                break
            i = found.start()
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker in _JPEG_STANDALONE or marker == 0xD8:
            i += 2
        elif marker == _JPEG_EOI:
            break
        elif i + 4 > end:
            break
        else:
            segment_end = i + 2 + int.from_bytes(data[i + 2 : i + 4], "big")
            if marker == _JPEG_SOS:
                scans += 1
                found = _JPEG_MARKER.search(data, segment_end)
                if found is None:
                    break
                i = found.start()
            else:
                i = segment_end
    return scans


def without_png_text(data: bytes) -> bytes:
    """A PNG's bytes without its text chunks (tEXt, zTXt, iTXt); any other data as it is.

    No text chunk changes a pixel, and Pillow decompresses every compressed one when it opens the
    file (up to 1 MB each, 64 MB an image): a 64 KB PNG of them cost 62 MB and a quarter of a
    second to open. A chunk is 4 bytes of length, 4 of type, the data and a 4-byte CRC; a length
    that runs past the end stops the walk and Pillow judges the rest (truncated, corrupt).
    """
    if not data.startswith(_PNG_SIGNATURE):
        return data
    keep, start, pos, size = [], 0, len(_PNG_SIGNATURE), len(data)
    while pos + 8 <= size:
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if kind in _PNG_TEXT_CHUNKS and end <= size:
            keep.append(data[start:pos])
            start = end
        if kind == b"IEND" or end > size:
            break
        pos = end
    return data if not keep else b"".join([*keep, data[start:]])


def _too_large(message: str) -> WorkerError:
    return WorkerError(ErrorCode.IMAGE_TOO_LARGE, message)


def open_image(data: bytes, *, limits: DecodeLimits):  # -> tuple[PIL.Image.Image, Header]
    """Open lazily (Pillow reads the header, not the pixels) and check every limit.

    The opened image holds its header and a view of `data`; `decode_opened` decodes it, so a
    job's lone image is opened once for both.

    Raises:
        WorkerError: as `read_header`.
    """
    from PIL import Image, UnidentifiedImageError

    from worker.config import ENV_VARS

    if len(data) > limits.max_image_bytes:
        raise _too_large(f"{len(data):,} bytes, over the {limits.max_image_bytes:,} byte cap")
    try:
        image = Image.open(io.BytesIO(without_png_text(data)), formats=FORMATS)
    except UnidentifiedImageError:
        raise WorkerError(ErrorCode.IMAGE_DECODE_FAILED, f"not a {FORMAT_NAMES} image") from None
    except Image.DecompressionBombError:  # Pillow's own cap (2 x Image.MAX_IMAGE_PIXELS) came first
        raise _too_large(
            f"header claims over {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels, over the caps "
            f"({limits.max_image_side} per side, {limits.max_image_pixels:,} pixels)"
        ) from None
    except Exception as exc:  # Pillow's plugins raise many types for a corrupt header
        raise WorkerError(ErrorCode.IMAGE_DECODE_FAILED, f"corrupt image header ({type(exc).__name__})") from None
    name = "JPEG" if image.format == "MPO" else image.format
    header = Header(name, *image.size)
    if header.width < 1 or header.height < 1:
        raise WorkerError(ErrorCode.IMAGE_DECODE_FAILED, f"{name} header says {header.width}x{header.height}")
    side, pixels = limits.max_image_side, limits.max_image_pixels
    if header.width > side or header.height > side or header.pixels > pixels:
        raise _too_large(f"{header.width}x{header.height} {name} is over the caps ({side} per side, {pixels:,} pixels)")
    if name == "JPEG":
        scans = jpeg_scans(data, limits.max_jpeg_scans)
        if scans > limits.max_jpeg_scans:
            raise _too_large(
                f"progressive JPEG with over {limits.max_jpeg_scans} scans "
                f"({ENV_VARS['max_jpeg_scans']}); re-encode it as baseline"
            )
    return image, header


def read_header(data: bytes, *, limits: DecodeLimits) -> Header:
    """Format and size of an encoded image, every limit checked, no pixel decoded.

    Raises:
        WorkerError: IMAGE_TOO_LARGE (bytes, side, pixels or JPEG scans over `limits`) or
            IMAGE_DECODE_FAILED (not a supported format, or a corrupt header).
    """
    image, header = open_image(data, limits=limits)
    image.close()
    return header


def _scaled_to_8_bits(image):  # -> PIL.Image.Image
    """16-bit, 32-bit and float grayscale as 8-bit "L", scaled over the range, never clipped.

    Pillow's own convert("L") clips these modes (a 16-bit '6' becomes a binarised blob):
    - I;16*: v >> 8, the high byte, as Pillow and OpenCV reduce 16-bit RGB;
    - I (32-bit int): the same when every value fits 16 bits, else min..max onto 0..255;
    - F (float): 0..1 onto 0..255 when every value is in [0, 1], else min..max onto 0..255
      (NaN reads as 0).
    """
    import numpy as np
    from PIL import Image

    if image.mode.startswith("I;16"):
        return Image.fromarray((np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8), "L")
    values = np.asarray(image)
    if image.mode == "F":
        values = np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        low, high = float(values.min()), float(values.max())
        if low >= 0.0 and high <= 1.0:
            low, high = 0.0, 1.0
    else:
        low, high = int(values.min()), int(values.max())
        if low >= 0 and high <= 0xFFFF:
            return Image.fromarray((values >> 8).astype(np.uint8), "L")
    scale = 255.0 / (high - low) if high > low else 0.0
    return Image.fromarray(np.rint((values - low) * scale).astype(np.uint8), "L")


def _has_alpha(image) -> bool:
    # transformers' convert_to_rgb test, verbatim: an alpha band or a transparency entry.
    return "A" in image.getbands() or image.info.get("transparency") is not None


def _composite_on_white(image):  # -> PIL.Image.Image
    """transformers' convert_to_rgb for an image with transparency, one band of rows at a time:
    alpha_composite is per pixel, so the result is identical and the RGBA copies stay small."""
    from PIL import Image

    width, height = image.size
    out = Image.new("RGB", image.size)
    for top in range(0, height, _BAND_ROWS):
        band = image.crop((0, top, width, min(height, top + _BAND_ROWS))).convert("RGBA")
        white = Image.new("RGBA", band.size, (255, 255, 255, 255))
        out.paste(Image.alpha_composite(white, band).convert("RGB"), (0, top))
    return out


def _orientation(image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1))
    except Exception:  # a corrupt EXIF block is ignored, as exif_transpose ignores it
        return 1


@dataclass(frozen=True)
class Reduction:
    """How fast decode may reduce an image: the model's resize, as the decode step needs it."""

    target: Callable[[int, int], tuple[int, int]]  # upright (width, height) -> (width, height) of the resize
    resample: int  # that resize's PIL filter


def _stored_target(reduction: Reduction, size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """The resize's (width, height) in the stored orientation of an image of stored `size`."""
    turned = orientation in _TURNED
    width, height = reduction.target(*(size[::-1] if turned else size))
    return (height, width) if turned else (width, height)


def _finish_reduction(image, reduction: Reduction, full: tuple[int, int], box, orientation: int):
    """`image` (the full one, or drafted to `box`'s part of it) reduced, then resized to the target."""
    width, height = _stored_target(reduction, full, orientation)
    factor = min(image.width // (REDUCE_GAP * max(1, width)), image.height // (REDUCE_GAP * max(1, height)))
    if factor >= 2:
        image = image.reduce(factor)
        box = tuple(v / factor for v in box)
    if image.size == full:  # nothing reduced: the model's resize step does the exact resize
        return image
    # box: the part of the reduced pixels that is the image (the last row and column may be partial).
    return image.resize((width, height), reduction.resample, box=box)


def decode_image(
    data: bytes,
    *,
    channels: int,
    limits: DecodeLimits,
    reduction: Reduction | None = None,
):  # -> PIL.Image.Image
    """Decode one encoded image into the 8-bit image a model's processor expects.

    Args:
        data: the encoded bytes of a PNG, JPEG, WEBP, BMP, GIF (first frame) or TIFF (first page).
        channels: 3 for an "RGB" result, 1 for "L".
        limits: the caps checked from the header before decoding (`DecodeLimits`; a
            `WorkerConfig` is one).
        reduction: None decodes every pixel. Otherwise the model's resize (`Reduction`): the image
            is decoded reduced to at least REDUCE_GAP times its target and resized to that target
            (the module docstring).

    Returns:
        A loaded `PIL.Image.Image` in mode "RGB" (channels=3) or "L" (channels=1): EXIF orientation
        applied, 16-bit and float modes scaled to 8 bits, palette expanded, transparency composited
        on white as transformers' `convert_to_rgb` does, "L" from RGB by Pillow's formula.

    Raises:
        WorkerError: IMAGE_TOO_LARGE (over a cap in `limits`, refused before decoding) or
            IMAGE_DECODE_FAILED (not a supported format, corrupt or truncated data).
        ValueError: `channels` is neither 1 nor 3 (a caller's bug, not the image's).
    """
    return decode_opened(open_image(data, limits=limits), channels=channels, reduction=reduction)


def decode_opened(opened, *, channels: int, reduction: Reduction | None = None):  # -> PIL.Image.Image
    """`decode_image` of an image `open_image` opened (its limits already checked): the same pixels."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    from PIL import Image

    image, header = opened
    box = (0.0, 0.0, float(header.width), float(header.height))
    try:
        with image:
            if reduction is not None and header.format == "JPEG":  # a JPEG's EXIF is read with its header
                width, height = _stored_target(reduction, image.size, _orientation(image))
                drafted = image.draft(None, (REDUCE_GAP * max(1, width), REDUCE_GAP * max(1, height)))
                box = drafted[1] if drafted else box  # libjpeg's largest scale keeping that size, or none
            expected = image.size
            image.load()
            orientation = _orientation(image)
            if image.mode in ("I", "F") or image.mode.startswith("I;16"):
                image = _scaled_to_8_bits(image)
            # Leaving `with` only drops the file object, not the pixels, so an image already in the
            # wanted mode is returned as it is: a copy of a 12 MP photo costs as much as half its decode.
            if channels == 1 and image.mode == "L" and not _has_alpha(image):
                result = image
            elif _has_alpha(image):
                result = _composite_on_white(image)
            else:
                result = image if image.mode == "RGB" else image.convert("RGB")
    except WorkerError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # truncated data, a corrupt stream, a mode Pillow cannot convert
        raise WorkerError(
            ErrorCode.IMAGE_DECODE_FAILED, f"corrupt or truncated {header.format} ({type(exc).__name__}: {exc})"
        ) from None
    if channels == 1 and result.mode != "L":
        result = result.convert("L")
    if result.size != expected:
        raise WorkerError(ErrorCode.IMAGE_DECODE_FAILED, f"{header.format} header and pixel data disagree on size")
    if reduction is not None:
        result = _finish_reduction(result, reduction, (header.width, header.height), box, orientation)
    transpose = _EXIF_TRANSPOSE.get(orientation)
    return result.transpose(getattr(Image.Transpose, transpose)) if transpose else result
