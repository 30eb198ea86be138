"""A mixed-adapter batch in one pass per layer: row i of the batch through adapter `keys[i]`.

peft's mixed batches (`adapter_names`) loop, in every LoRA layer, over the adapters of the batch:
one index, two small matmuls and a scatter per adapter per layer, and `set_adapter` walks every
module when the batch's first adapter changes. With dozens of adapters in a batch that loop is
most of the forward on a small model. Here each LoRA layer stacks the batch's adapters' A and B
(smaller ranks padded with zeros), gathers one pair per row and runs two batched matmuls (`bmm`; a
grouped convolution for a Conv2d's A), each row scaled by its adapter's scaling (0 for the base and
for adapters that do not adapt the layer); a Linear `modules_to_save` head gathers one weight per
row the same way. The base layers run once for the whole batch, as in peft. What each layer holds
per adapter is read once per loaded version (peft's modules are slow to look into), not per batch.

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
class _Layer:
    """A lora.Linear or lora.Conv2d layer, and what it holds per adapter key (read once)."""

    module: Any
    held: frozenset[str] = frozenset()
    factors: dict[str, tuple] = field(default_factory=dict)  # key -> (A, B, B's bias or None, scaling)

    def __post_init__(self) -> None:
        self.base = self.module.base_layer
        self.conv = type(self.module).__name__ == "Conv2d"
        self.out_features = self.module.out_features

    def factor(self, key: str) -> tuple:
        found = self.factors.get(key)
        if found is None:
            found = self.factors[key] = _factors(self.module, key, self.conv)
        return found


@dataclass
class _Head:
    """A ModulesToSaveWrapper, and each adapter key's copy of the module (read once)."""

    module: Any
    held: frozenset[str] = frozenset()
    copies: dict[str, tuple] = field(default_factory=dict)  # key -> (weight, bias or None)

    def __post_init__(self) -> None:
        self.original = self.module.original_module

    def copy(self, key: str | None) -> tuple:
        found = self.copies.get(key)
        if found is None:
            module = self.original if key is None else self.module.modules_to_save[key]
            if type(module).__name__ != "Linear" or type(self.original).__name__ != "Linear":
                raise Unsupported(
                    f"a modules_to_save of type {type(self.original).__name__} (only Linear takes this path)"
                )
            found = self.copies[key] = (module.weight, module.bias)
        return found


@dataclass
class _Structure:
    """The adapter-holding modules of one model, for one set of attached adapters."""

    adapters: frozenset[str]
    lora: list[_Layer] = field(default_factory=list)
    heads: list[_Head] = field(default_factory=list)
    others: list[Any] = field(default_factory=list)  # any other tuner layer or wrapper
    refused: dict[str, str] = field(default_factory=dict)  # adapter key -> why it cannot take this path
    rows_reason: str = ""  # the model reshapes the batch inside a layer (until the adapters change)


_STRUCTURES: weakref.WeakKeyDictionary[Any, _Structure] = weakref.WeakKeyDictionary()


def _structure(model: Any) -> _Structure:
    """The model's adapter-holding modules, walked again when the attached adapters change (what
    was read per key is kept for the keys still attached)."""
    from peft.tuners.lora import layer as lora
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper, ModulesToSaveWrapper

    adapters = frozenset(model.peft_config)  # keys are unique per loaded version: a new set, a new walk
    old = _STRUCTURES.get(model)
    if old is not None and old.adapters == adapters:
        return old
    kept = {id(r.module): r for r in (old.lora + old.heads if old else [])}
    found = _Structure(adapters)
    for module in model.modules():
        if type(module) in (lora.Linear, lora.Conv2d):
            layer = kept.get(id(module)) or _Layer(module)
            layer.held = frozenset(module.lora_A.keys())
            layer.factors = {k: v for k, v in layer.factors.items() if k in layer.held}
            found.lora.append(layer)
        elif type(module) is ModulesToSaveWrapper:
            head = kept.get(id(module)) or _Head(module)
            head.held = frozenset(module.modules_to_save.keys())
            head.copies = {k: v for k, v in head.copies.items() if k is None or k in head.held}
            found.heads.append(head)
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
    batch = _Batch(keys, next(model.parameters()).device, torch)
    for key in batch.unique:
        if key in structure.refused:
            raise Unsupported(structure.refused[key])
    involved = set(batch.unique) | set(model.active_adapters)
    for module in structure.others:
        if _held(module) & involved:
            raise Unsupported(f"a {type(module).__name__} layer holds one of the batch's adapters")
    forwards: list[tuple[Any, Callable[..., Any]]] = []
    try:
        for layer in structure.lora:
            forwards.append((layer.module, _lora_forward(layer, batch)))
        for head in structure.heads:
            forwards.append((head.module, _head_forward(head, batch)))
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


class _Batch:
    """One batch's rows, and per set of adapters a module holds, each row's slot in its stack."""

    def __init__(self, keys: Sequence[str | None], device: Any, torch: Any) -> None:
        self.keys, self.device, self.torch = list(keys), device, torch
        self.unique = list(dict.fromkeys(k for k in keys if k is not None))
        self._rows: dict[tuple, Any] = {}

    def slots(self, held: frozenset[str]) -> list[str]:
        """The batch's adapters a module holds, in a fixed order."""
        return [k for k in self.unique if k in held]

    def rows(self, slots: list[str], base: int = 0) -> Any:
        """Each row's slot: its adapter's place in `slots`; `base` for the base and for adapters the
        module does not hold."""
        found = self._rows.get((*slots, base))
        if found is None:
            place = {k: i for i, k in enumerate(slots)}
            index = [place.get(k, base) if k is not None else base for k in self.keys]
            found = self._rows[(*slots, base)] = self.torch.tensor(index, device=self.device)
        return found

    def scales(self, scaling: dict[str, float], dtype: Any) -> Any:
        """Each row's LoRA scaling (0 for rows the layer does not adapt: their delta vanishes)."""
        values = [scaling.get(k, 0.0) if k is not None else 0.0 for k in self.keys]
        return self.torch.tensor(values, device=self.device, dtype=dtype)


def _stack_padded(tensors: list[Any], dim: int, torch: Any) -> Any:
    """Stack, padding `dim` (the rank) with zeros to the largest rank."""
    import torch.nn.functional as F

    rank = max(t.shape[dim] for t in tensors)
    if all(t.shape[dim] == rank for t in tensors):
        return torch.stack(tensors)
    return torch.stack([F.pad(t, [0, 0] * (t.dim() - 1 - dim) + [0, rank - t.shape[dim]]) for t in tensors])


def _factors(module: Any, key: str, conv: bool) -> tuple:
    """(A, B, B's bias or None, scaling) of one adapter in one layer, checked for this path once.

    Raises:
        Unsupported: a LoRA variant (DoRA, ...), a merged layer, active dropout, a Conv2d layer this
            path does not reproduce.
    """
    if key in module.lora_variant or module.use_dora.get(key, False):
        raise Unsupported(f"adapter {key}: a LoRA variant (DoRA or another) in {type(module).__name__}", key)
    if module.merged:
        raise Unsupported(f"a {type(module).__name__} layer has a merged adapter")
    dropout = module.lora_dropout[key]
    if dropout.training and getattr(dropout, "p", 0) > 0:
        raise Unsupported("LoRA dropout is active (the model is training)")
    a, b = module.lora_A[key], module.lora_B[key]
    if conv:
        plain = a.groups == 1 and a.padding_mode == "zeros" and b.groups == 1 and tuple(b.kernel_size) == (1, 1)
        if not plain:
            raise Unsupported(f"adapter {key}: a Conv2d LoRA layer with groups or padding modes", key)
    return a.weight, b.weight, b.bias, module.scaling[key]


def _lora_forward(layer: _Layer, batch: _Batch) -> Callable:
    """The layer's forward for this batch: the base layer once, plus each row's LoRA delta (rows the
    layer does not adapt gather slot 0 and scale it by 0)."""
    torch, base, count = batch.torch, layer.base, len(batch.keys)
    slots = batch.slots(layer.held)
    if not slots:
        return base
    factors = [layer.factor(k) for k in slots]
    rows = batch.rows(slots)
    a = _stack_padded([f[0] for f in factors], 0, torch)[rows]  # (n, r, in[, kh, kw])
    b = _stack_padded([f[1] for f in factors], 1, torch)[rows]  # (n, out, r[, 1, 1])
    scale = batch.scales({k: f[3] for k, f in zip(slots, factors)}, a.dtype)
    bias = None
    if any(f[2] is not None for f in factors):
        zero = a.new_zeros(layer.out_features)
        bias = torch.stack([f[2] if f[2] is not None else zero for f in factors])[rows] * scale[:, None]
    conv = layer.module.lora_A[slots[0]] if layer.conv else None  # stride, padding, dilation: the base's

    def forward(x: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("adapter_names", None)
        result = base(x, *args, **kwargs)
        if x.dim() < 2 or x.shape[0] != count or (conv is not None and x.dim() != 4):
            raise NotOneRowPerImage(f"a {type(base).__name__} layer's input is not one row per image")
        xa = x.to(a.dtype)
        if conv is not None:  # A as one grouped convolution (a group per row), B (1x1) as a matmul per row
            n, channels, height, width = xa.shape
            weights = a.reshape(n * a.shape[1], channels, *a.shape[3:])
            h = torch.nn.functional.conv2d(
                xa.reshape(1, n * channels, height, width), weights, None, conv.stride, conv.padding, conv.dilation, n
            )
            h = h.reshape(n, a.shape[1], -1) * scale[:, None, None]  # (n, r, H'W')
            delta = torch.bmm(b.flatten(2), h)  # (n, out, H'W')
            if bias is not None:
                delta = delta + bias.unsqueeze(2)
        else:
            flat = xa.reshape(count, -1, xa.shape[-1])  # (n, tokens, in)
            h = torch.bmm(flat, a.transpose(1, 2)) * scale[:, None, None]
            delta = torch.bmm(h, b.transpose(1, 2))
            if bias is not None:
                delta = delta + bias.unsqueeze(1)
        return result + delta.reshape(result.shape).to(result.dtype)

    return forward


def _head_forward(head: _Head, batch: _Batch) -> Callable:
    """A `modules_to_save` head's forward for this batch: each row through its adapter's copy (the
    base's original module for the base and for adapters without one)."""
    torch, count = batch.torch, len(batch.keys)
    slots = batch.slots(head.held)
    if not slots:
        return head.original
    copies = [head.copy(k) for k in (*slots, None)]  # the base's in the last slot
    rows = batch.rows(slots, base=len(slots))
    weight = torch.stack([w for w, _ in copies])[rows]  # (n, out, in)
    bias = None
    if any(b is not None for _, b in copies):
        bias = torch.stack([b if b is not None else w.new_zeros(w.shape[0]) for w, b in copies])[rows]

    def forward(x: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("adapter_names", None)
        if args or kwargs or x.dim() < 2 or x.shape[0] != count:
            raise NotOneRowPerImage("a modules_to_save head's input is not one row per image")
        flat = x.to(weight.dtype).reshape(count, -1, x.shape[-1])
        out = torch.bmm(flat, weight.transpose(1, 2))
        if bias is not None:
            out = out + bias.unsqueeze(1)
        return out.reshape(*x.shape[:-1], weight.shape[1]).to(x.dtype)

    return forward
