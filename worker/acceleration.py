"""The device, and GPU settings applied to the loaded model: channels_last, autocast, torch.compile.

Each one is a setting (worker/config.py) and each runs on CPU too, where it can, so the code
path is exercised on the development machines; the benchmarks show what they buy on CUDA
(benchmarks/gpu.py). Pinned host memory and non-blocking copies are in the notebook's
`predict_logits`, where the batch becomes a tensor.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

AUTOCAST_CHOICES = ("off", "float16", "bfloat16")
CHANNELS_LAST_CHOICES = ("auto", "on", "off")


def resolve_device(setting: str) -> str:
    """The torch device for FASTBACKEND_DEVICE (syntax checked by worker/config.py): `auto` = cuda
    when a GPU is visible, else cpu; a named device must be present on this machine.

    Raises:
        ConfigError: the device is not available here; names the variable and its value.
    """
    import torch

    from worker.config import ENV_VARS, ConfigError

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind, _, index = setting.partition(":")
    where = f"{ENV_VARS['device']}={setting!r}"
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            built = "" if torch.version.cuda else "; this torch is built without CUDA"
            raise ConfigError(f"{where}: no CUDA GPU is visible here (torch {torch.__version__}{built})")
        if index and int(index) >= count:
            raise ConfigError(f"{where}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    elif kind == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{where}: MPS (Apple GPU) is not available here")
    return setting


def is_cnn(model: Any) -> bool:
    """More than one 2-D convolution: a CNN (ConvNeXt, ResNet...), not a ViT's patch embedding."""
    import torch

    return sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) > 1


def wants_channels_last(setting: str, model: Any, device: str) -> bool:
    """`auto`: CNNs on CUDA, where cuDNN's NHWC kernels are faster; `on`/`off` force it."""
    if setting == "auto":
        return device.startswith("cuda") and is_cnn(model)
    return setting == "on"


def prepare(model: Any, *, channels_last: str, device: str) -> Any:
    """The model in the configured memory format (weights only; inputs follow in the convolutions)."""
    import torch

    if wants_channels_last(channels_last, model, device):
        model = model.to(memory_format=torch.channels_last)
    return model


def compile_in_place(model: Any) -> Any:
    """`torch.compile` keeping the object (nn.Module.compile), so peft and isinstance checks still see it."""
    model.compile()
    return model


def precision(setting: str, device: str) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of the forward's precision context, chosen once at setup: mixed precision
    (`float16`/`bfloat16`, torch.autocast), or nothing (`off`)."""
    if setting == "off":
        return contextlib.nullcontext
    import torch

    return functools.partial(torch.autocast, device_type=device.split(":")[0], dtype=getattr(torch, setting))
