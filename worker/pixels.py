"""The model's pixel steps, applied: one 8-bit image to float32 CxHxW, as its image processor does.

Each step follows transformers' numpy code for the PIL backend (the image in the model's mode,
resize with the processor's filter by its size rule, center crop, rescale, normalise), with the
steps and their parameters from a `worker.processors.PreprocessConfig`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from worker.processors import PreprocessConfig


def to_model_mode(image: Image.Image | np.ndarray, num_channels: int) -> Image.Image:
    """An 8-bit image as the model's channels: "RGB", or "L" by PIL's formula for 1-channel models.

    Transparency is composited on white first, as transformers' convert_to_rgb does. Accepts a PIL
    image (the decode step's output) or an HxW / HxWx{1,3,4} uint8 array.
    """
    if isinstance(image, np.ndarray):
        array = image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image
        image = Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8))
    mode = "RGB" if num_channels == 3 else "L"
    if num_channels not in (1, 3):
        raise ValueError(f"{num_channels}-channel models are not supported (1 or 3)")
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        image = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image)
    return image if image.mode == mode else image.convert(mode)


def resize_target(height: int, width: int, config: PreprocessConfig) -> tuple[int, int]:
    """(height, width) after the resize step, by transformers' rules for the config's resize mode.

    The worker's fast decode (FASTBACKEND_FAST_DECODE) reads it too: it never reduces an image below
    twice this size, so no resize means no reduction.
    """
    if config.resize == "none":
        return height, width
    if config.resize == "exact":
        return config.resize_size
    edge, longest = config.resize_size
    if config.resize == "crop_pct":
        edge = int(edge / config.crop_pct)
    if longest:  # get_size_with_aspect_ratio: the longest edge capped, the shortest follows
        small, large = min(height, width), max(height, width)
        raw = None
        if large / small * edge > longest:
            raw = longest * small / large
            edge = int(round(raw))
        if (height <= width and height == edge) or (width <= height and width == edge):
            return height, width
        scale = raw if raw is not None else edge
        return (int(scale * height / width), edge) if width < height else (edge, int(scale * width / height))
    # get_resize_output_image_size(default_to_square=False): torchvision's shortest-edge rule
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(edge * long / short)
    return (new_long, edge) if width <= height else (edge, new_long)


def _center_crop(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """transformers' center_crop on a CxHxW array: zero-padded where the image is smaller."""
    h, w = array.shape[-2:]
    top, left = (h - height) // 2, (w - width) // 2
    if top >= 0 and left >= 0:
        return array[:, top : top + height, left : left + width]
    new_h, new_w = max(height, h), max(width, w)
    padded = np.zeros((array.shape[0], new_h, new_w), dtype=array.dtype)
    pad_top, pad_left = -(-(new_h - h) // 2), -(-(new_w - w) // 2)
    padded[:, pad_top : pad_top + h, pad_left : pad_left + w] = array
    top, left = top + pad_top, left + pad_left
    return padded[:, max(0, top) : min(new_h, top + height), max(0, left) : min(new_w, left + width)]


def rescale_and_normalize(
    array: np.ndarray,
    rescale_factor: float | None,
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
    *,
    offset: bool = False,
) -> np.ndarray:
    """A (C, H, W) image rescaled (in float64, then float32; `offset`: minus 1) and normalised (in
    float32; None: not), as transformers' numpy steps do. Every processor reproduced here uses it."""
    x = array
    if rescale_factor is not None:
        x = (x.astype(np.float64) * rescale_factor).astype(np.float32)
        if offset:
            x -= 1
    x = x.astype(np.float32, copy=False)
    if mean is not None and std is not None:
        x = (x - np.array(mean, np.float32)[:, None, None]) / np.array(std, np.float32)[:, None, None]
    return x


def _rescale_and_normalize(array: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    stats = (config.mean, config.std) if config.normalize else (None, None)
    x = rescale_and_normalize(array, config.rescale_factor, *stats, offset=config.rescale_offset)
    if config.include_top:  # EfficientNet: divide by std a second time
        x = x / np.array(config.std, np.float32)[:, None, None]
    return x


def preprocess_image(image: Image.Image | np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """One 8-bit image to the model's float32 CxHxW pixels, step for step as its image processor."""
    image = to_model_mode(image, config.num_channels)
    if config.resize != "none":
        height, width = resize_target(image.height, image.width, config)
        image = image.resize((width, height), resample=config.resample)
    array = np.asarray(image)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    if config.resize == "crop_pct":
        array = _center_crop(array, config.resize_size[0], config.resize_size[0])
    if config.center_crop:
        array = _center_crop(array, *config.center_crop)
    return _rescale_and_normalize(array, config)
