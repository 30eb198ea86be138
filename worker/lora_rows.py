"""A mixed-adapter batch in one pass per layer: row i of the batch through adapter `keys[i]`.

peft's mixed batches (`adapter_names`) loop, in every LoRA layer, over the adapters of the batch:
one index, two small matmuls and a scatter per adapter per layer, and `set_adapter` walks every
module when the batch's first adapter changes. With dozens of adapters in a batch that loop is
most of the forward on a small model. Here each LoRA layer stacks the batch's adapters' A and B
(scaling folded into B, smaller ranks padded with zeros, a zero slot for the base), gathers one
pair per row and runs two batched matmuls (`bmm`; a grouped convolution for a Conv2d's A); a
Linear `modules_to_save` head gathers one weight per row the same way. The base layers run once
for the whole batch, as in peft.

Where this does not apply (a LoRA variant such as DoRA, a merged layer, a layer type other than
Linear or Conv2d, a non-Linear `modules_to_save`, a layer whose input is not one row per image, as
in Swin's windows) `Unsupported` is raised, before the forward or from inside it, and the caller
runs peft's own mixed forward instead. The forward is pure, so running it again is safe.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

PATH = "batched: one gather and two matmuls per LoRA layer for the whole batch"
FALLBACK = "peft's adapter_names (a loop over the batch's adapters in each layer)"


class Unsupported(Exception):
    """This batch cannot take the batched path; peft's `adapter_names` forward serves it. `key`: the
    adapter (peft's key) that cannot, when it is one adapter's doing."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class NotOneRowPerImage(Unsupported):
    """A layer saw a batch of another length (Swin's windows): the model reshapes the batch."""


@dataclass
class _Structure:
    """The adapter-holding modules of one model, for one set of attached adapters."""

    adapters: frozenset[str]
    lora: list[Any] = field(default_factory=list)  # lora.Linear and lora.Conv2d layers
    heads: list[Any] = field(default_factory=list)  # ModulesToSaveWrapper
    others: list[Any] = field(default_factory=list)  # any other tuner layer or wrapper
    refused: dict[str, str] = field(default_factory=dict)  # adapter key -> why it cannot take this path
    rows_reason: str = ""  # the model reshapes the batch inside a layer (until the adapters change)


_STRUCTURES: weakref.WeakKeyDictionary[Any, _Structure] = weakref.WeakKeyDictionary()


def _structure(model: Any) -> _Structure:
    from peft.tuners.lora import layer as lora
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper, ModulesToSaveWrapper

    adapters = frozenset(model.peft_config)  # keys are unique per loaded version: a new set, a new walk
    found = _STRUCTURES.get(model)
    if found is not None and found.adapters == adapters:
        return found
    found = _Structure(adapters)
    for module in model.modules():
        if type(module) in (lora.Linear, lora.Conv2d):
            found.lora.append(module)
        elif type(module) is ModulesToSaveWrapper:
            found.heads.append(module)
        elif isinstance(module, (BaseTunerLayer, AuxiliaryTrainingWrapper)):
            found.others.append(module)
    _STRUCTURES[model] = found
    return found


def _held(module: Any) -> set[str]:
    names: set[str] = set()
    for attribute in getattr(module, "adapter_layer_names", ()):
        holder = getattr(module, attribute, None)
        if hasattr(holder, "keys"):
            names.update(holder.keys())
    return names


@contextlib.contextmanager
def one_adapter_per_row(model: Any, keys: Sequence[str | None]) -> Iterator[None]:
    """While the block runs one forward of `model` (a PeftModel) on a batch of `len(keys)` rows, row
    i goes through adapter `keys[i]` (None: the base). Run the forward with the active adapter as it
    is (no `set_adapter`, no `adapter_names`): every LoRA layer and head answers per row.

    Raises:
        Unsupported: this batch needs peft's mixed forward (raised before the block, or from the
            forward inside it).
    """
    import torch
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        raise Unsupported("not a peft model")
    structure = _structure(model)
    if structure.rows_reason:
        raise Unsupported(structure.rows_reason)
    unique = list(dict.fromkeys(k for k in keys if k is not None))
    for key in unique:
        if key in structure.refused:
            raise Unsupported(structure.refused[key])
    involved = set(unique) | set(model.active_adapters)
    for module in structure.others:
        if _held(module) & involved:
            raise Unsupported(f"a {type(module).__name__} layer holds one of the batch's adapters")
    device = next(model.parameters()).device
    forwards: list[tuple[Any, Callable[..., Any]]] = []
    try:
        for module in structure.lora:
            forwards.append((module, _lora_forward(module, unique, keys, device, torch)))
        for module in structure.heads:
            forwards.append((module, _head_forward(module, unique, keys, device, torch)))
    except Unsupported as exc:
        if exc.key is not None:
            structure.refused[exc.key] = str(exc)
        raise
    if any("forward" in module.__dict__ for module, _ in forwards):
        raise Unsupported("a layer's forward is already replaced")
    for module, forward in forwards:
        module.forward = forward  # an instance attribute: nn.Module.__call__ calls it
    try:
        yield
    except NotOneRowPerImage as exc:
        structure.rows_reason = str(exc)
        raise
    finally:
        for module, _ in forwards:
            del module.forward


def _slots(unique: list[str], held: Any, keys: Sequence[str | None], torch: Any, device: Any) -> tuple[list[str], Any]:
    """The batch's adapters this module holds, and each row's slot (the last slot: the base)."""
    slots = [k for k in unique if k in held]
    position = {k: i for i, k in enumerate(slots)}
    rows = [position.get(k, len(slots)) if k is not None else len(slots) for k in keys]
    return slots, torch.tensor(rows, device=device)


def _stack_padded(tensors: list[Any], dim: int, torch: Any) -> Any:
    """Stack, padding `dim` (the rank) with zeros to the largest, plus one zero slot at the end."""
    import torch.nn.functional as F

    rank = max(t.shape[dim] for t in tensors)
    padded = []
    for t in tensors:
        missing = rank - t.shape[dim]
        if missing:
            pad = [0, 0] * (t.dim() - 1 - dim) + [0, missing]
            t = F.pad(t, pad)
        padded.append(t)
    padded.append(torch.zeros_like(padded[0]))
    return torch.stack(padded)


def _check_plain(layer: Any, key: str) -> None:
    if key in layer.lora_variant or layer.use_dora.get(key, False):
        raise Unsupported(f"adapter {key}: a LoRA variant (DoRA or another) in {type(layer).__name__}", key)
    if layer.lora_dropout[key].training and getattr(layer.lora_dropout[key], "p", 0) > 0:
        raise Unsupported("LoRA dropout is active (the model is training)")


def _lora_forward(layer: Any, unique: list[str], keys: Sequence[str | None], device: Any, torch: Any) -> Callable:
    """The layer's forward for this batch: the base layer once, plus each row's LoRA delta."""
    if layer.merged:
        raise Unsupported(f"a {type(layer).__name__} layer has a merged adapter")
    slots, rows = _slots(unique, layer.lora_A, keys, torch, device)
    count = len(keys)
    if not slots:
        return lambda x, *args, **kwargs: layer.base_layer(x, *args, **kwargs)
    for key in slots:
        _check_plain(layer, key)
    biased = any(layer.lora_B[k].bias is not None for k in slots)
    bias = None
    if biased:
        zero = layer.lora_B[slots[0]].weight.new_zeros(layer.out_features)
        scaled = [layer.lora_B[k].bias * layer.scaling[k] if layer.lora_B[k].bias is not None else zero for k in slots]
        bias = torch.stack([*scaled, zero])
    a = _stack_padded([layer.lora_A[k].weight for k in slots], 0, torch)  # (slots+1, r, in[, kh, kw])
    b = _stack_padded([layer.lora_B[k].weight * layer.scaling[k] for k in slots], 1, torch)  # (slots+1, out, r[,1,1])
    conv = type(layer).__name__ == "Conv2d"
    if conv:
        shapes = {
            (m.kernel_size, m.stride, m.padding, m.dilation, m.groups, m.padding_mode)
            for m in (layer.lora_A[k] for k in slots)
        }
        if len(shapes) != 1 or next(iter(shapes))[4] != 1 or next(iter(shapes))[5] != "zeros":
            raise Unsupported("a Conv2d LoRA layer with groups or padding modes")
        if any(layer.lora_B[k].groups != 1 or layer.lora_B[k].kernel_size != (1, 1) for k in slots):
            raise Unsupported("a Conv2d LoRA layer with a grouped or non-1x1 B")
        spec = layer.lora_A[slots[0]]

    def forward(x: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("adapter_names", None)
        result = layer.base_layer(x, *args, **kwargs)
        if x.dim() < 2 or x.shape[0] != count:
            raise NotOneRowPerImage(f"a {type(layer.base_layer).__name__} layer's input is not one row per image")
        xa = x.to(a.dtype)
        if conv:
            if x.dim() != 4:
                raise NotOneRowPerImage("a Conv2d layer's input is not one row per image")
            n, channels, height, width = xa.shape
            rank = a.shape[1]
            weights = a[rows].reshape(n * rank, channels, *a.shape[3:])
            h = torch.nn.functional.conv2d(
                xa.reshape(1, n * channels, height, width),
                weights,
                None,
                spec.stride,
                spec.padding,
                spec.dilation,
                groups=n,
            )
            h = h.reshape(n, rank, -1)  # (n, r, H'W')
            delta = torch.bmm(b[rows].flatten(2), h)  # (n, out, H'W')
            if bias is not None:
                delta = delta + bias[rows].unsqueeze(2)
            delta = delta.reshape(result.shape)
        else:
            flat = xa.reshape(count, -1, xa.shape[-1])  # (n, tokens, in)
            delta = torch.bmm(torch.bmm(flat, a[rows].transpose(1, 2)), b[rows].transpose(1, 2))
            if bias is not None:
                delta = delta + bias[rows].unsqueeze(1)
            delta = delta.reshape(result.shape)
        return result + delta.to(result.dtype)

    return forward


def _head_forward(wrapper: Any, unique: list[str], keys: Sequence[str | None], device: Any, torch: Any) -> Callable:
    """A `modules_to_save` head's forward for this batch: each row through its adapter's copy (the
    base's original module for the base and for adapters without one)."""
    slots, rows = _slots(unique, wrapper.modules_to_save, keys, torch, device)
    original = wrapper.original_module
    if not slots:
        return lambda *args, **kwargs: original(*args, **kwargs)
    copies = [wrapper.modules_to_save[k] for k in slots]
    if not all(type(m) is torch.nn.Linear for m in (original, *copies)):
        raise Unsupported(f"a modules_to_save of type {type(original).__name__} (only Linear takes this path)")
    weight = torch.stack([m.weight for m in (*copies, original)])  # the base in the last slot
    bias = None
    if any(m.bias is not None for m in (*copies, original)):
        bias = torch.stack(
            [m.bias if m.bias is not None else m.weight.new_zeros(m.out_features) for m in (*copies, original)]
        )
    count = len(keys)

    def forward(x: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("adapter_names", None)
        if args or kwargs or x.dim() < 2 or x.shape[0] != count:
            raise NotOneRowPerImage("a modules_to_save head's input is not one row per image")
        flat = x.to(weight.dtype).reshape(count, -1, x.shape[-1])
        out = torch.bmm(flat, weight[rows].transpose(1, 2))
        if bias is not None:
            out = out + bias[rows].unsqueeze(1)
        return out.reshape(*x.shape[:-1], weight.shape[1]).to(x.dtype)

    return forward
