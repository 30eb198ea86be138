"""Training semantic segmenters: a SegFormer base from a config, LoRA adapters as peft's guide trains them.

peft's "Semantic segmentation using LoRA" trains SegFormer with LoRA on the attention projections
and the decode head in full. Here the layout that lets adapters share one forward instead
(docs/tasks/segmentation.md): LoRA on the attention projections (`q_proj`, `v_proj`), the patch
embeddings' convolutions and the decode head's fuse convolution, only the classifier (a 1x1
convolution) trained in full (`modules_to_save`). The loss is the model's own
(`model(pixel_values, labels=...).loss`: logits upsampled to the labels, cross-entropy skipping 255).

`fit_segmenter` is the loop: AdamW, a cosine learning rate, albumentations on image and mask
together, mean and per-class IoU on the validation pairs after every epoch
(segmentation_eval.py, torchmetrics), a checkpoint per epoch, resume, early stopping on the
validation mIoU (the best epoch's weights are kept), autocast on a GPU. Each epoch's order,
augmentations and dropout depend only on the seed and the epoch, so on CPU a run resumed from any
checkpoint ends with the same weights as one never interrupted.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from exported.train_adapter import CHECKPOINT_PATTERN, autocast_dtype, epoch_order, last_checkpoint
from fastbackend.training.segmentation_data import PairSet, augmented, model_batch, train_augment

# The adapter layout that shares a forward (peft's mixed batches take only Linear/Embedding/Conv
# modules_to_save; the decode head holds a BatchNorm): see docs/tasks/segmentation.md.
SEGFORMER_LORA_TARGETS = ("q_proj", "v_proj", "patch_embeddings.proj", "linear_fuse")
SEGFORMER_MODULES_TO_SAVE = ("classifier",)


@dataclass(frozen=True)
class SegmentationTrainSettings:
    """How to train; `epochs` and `patience` may change when resuming, the rest may not."""

    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 16
    patience: int = 0  # epochs without a better validation mIoU before stopping; 0 = never stop early
    seed: int = 0
    augment: bool = True  # train_augment on image and mask together; False: the pairs as they are
    precision: str = "auto"  # auto: bf16 (fp16 without bf16) autocast on a GPU, float32 on CPU; float32
    weight_decay: float = 0.01

    def lr_at(self, progress: float) -> float:
        """Cosine decay from `lr` to 0 over all the steps of `epochs` (progress 0 to 1)."""
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    def epoch_seed(self, epoch: int) -> int:
        """The seed of one epoch's augmentations and dropout: a resumed run draws the same."""
        return self.seed * 100_003 + epoch


def new_segformer(labels: Sequence[str], image_size: int, folder: str | Path, *, seed: int = 0, **config: Any):
    """A SegformerForSemanticSegmentation from a config (random weights), its processor saved in `folder`.

    `config` overrides SegformerConfig's fields (hidden_sizes, depths, strides, ...). Returns the model.
    """
    import torch
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessorPil

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    settings = SegformerConfig(
        **config, id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)}
    )
    torch.manual_seed(seed)
    model = SegformerForSemanticSegmentation(settings)
    settings.save_pretrained(folder)
    SegformerImageProcessorPil(size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return model


def start_at_class_prior(model, masks: Sequence[Any]) -> None:
    """Set the classifier's bias to the log of each class's pixel share in `masks` (ignore index aside).

    A segmenter from scratch otherwise spends its first thousand steps learning that most pixels
    are background, and a large learning rate there can leave the decode head's ReLUs dead.
    """
    import numpy as np
    import torch

    classifier = model.decode_head.classifier
    counts = np.zeros(classifier.out_channels, dtype=np.float64)
    for mask in masks:
        ids = np.asarray(mask).ravel()
        counts += np.bincount(ids[ids < len(counts)], minlength=len(counts))
    share = (counts + 1) / (counts.sum() + len(counts))  # +1: a class absent from the masks stays finite
    with torch.no_grad():
        classifier.bias.copy_(torch.log(torch.as_tensor(share, dtype=classifier.bias.dtype)))


def new_lora_segmenter(
    base_dir: str | Path,
    *,
    rank: int = 8,
    alpha: int = 16,
    seed: int = 0,
    targets: Sequence[str] = SEGFORMER_LORA_TARGETS,
    modules_to_save: Sequence[str] = SEGFORMER_MODULES_TO_SAVE,
):
    """The saved base (from_pretrained, as the worker loads it) with a new LoRA adapter."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSemanticSegmentation

    base = AutoModelForSemanticSegmentation.from_pretrained(str(base_dir), use_safetensors=True)
    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), modules_to_save=list(modules_to_save))
    return get_peft_model(base, config)


def _trainable(model) -> dict[str, Any]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def _load_trainable(model, state: dict[str, Any]) -> None:
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def _train_mode(model) -> None:
    """Train mode, except batch norms with nothing to train (an adapter's frozen base): their running
    statistics stay the base's. Updated in train mode, they would live in memory only, never in the
    adapter's files, and the served adapter would answer differently from the trained one."""
    import torch

    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            if not any(p.requires_grad for p in module.parameters()):
                module.eval()


def _save_checkpoint(folder: Path, epoch: int, state: dict[str, Any]) -> Path:
    """`epoch-NNN.pt`, written beside under a temporary name then renamed: never half a checkpoint."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"epoch-{epoch:03d}.pt"
    torch.save(state, path.with_suffix(".tmp"))
    os.replace(path.with_suffix(".tmp"), path)
    return path


def _train_epoch(
    model, train: PairSet, prep, settings: SegmentationTrainSettings, epoch: int, optimizer, amp, scaler, device
) -> float:
    import torch

    torch.manual_seed(settings.epoch_seed(epoch))  # dropout and drop-path of this epoch
    pairs = augmented(train, train_augment(settings.epoch_seed(epoch))) if settings.augment else train
    order = epoch_order(len(train), settings.seed, epoch)
    steps_per_epoch = math.ceil(len(train) / settings.batch_size)
    _train_mode(model)
    total, seen = 0.0, 0
    for step, start in enumerate(range(0, len(train), settings.batch_size)):
        batch = pairs.subset(order[start : start + settings.batch_size].tolist())
        pixels, labels = (torch.from_numpy(a).to(device) for a in model_batch(batch, prep))
        for group in optimizer.param_groups:
            group["lr"] = settings.lr_at((epoch * steps_per_epoch + step) / (settings.epochs * steps_per_epoch))
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = model(pixel_values=pixels, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total, seen = total + loss.item() * len(batch), seen + len(batch)
    return total / max(seen, 1)


def fit_segmenter(
    model,
    train: PairSet,
    prep,
    labels: Sequence[str],
    settings: SegmentationTrainSettings,
    *,
    val: PairSet | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train the model's trainable parameters on image/mask pairs; returns the history.

    Args:
        model: a segmenter (a PeftModel trains its adapter; a plain model trains in full).
        train, val: image/mask pairs; with `val`, IoU after every epoch, early stopping and the
            best epoch's weights kept.
        prep: the base's PreprocessConfig (exported.preprocess.read_preprocess_config).
        labels: the model's labels, in class-id order (per-class IoU is keyed by them).
        checkpoint_dir: where `epoch-NNN.pt` is written after every epoch.
        resume: continue from the last checkpoint in `checkpoint_dir` (settings must match).
        on_epoch: called with each epoch's row (epoch, train_loss, val_mean_iou, ...).

    Returns:
        {"epochs": [rows], "best_epoch", "best_val_mean_iou", "stopped_early", "settings"}.
    """
    import torch

    from fastbackend.training.segmentation_eval import evaluate_segmenter

    device = next(model.parameters()).device
    amp = autocast_dtype(device, settings.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    history: dict[str, Any] = {
        "epochs": [],
        "best_epoch": None,
        "best_val_mean_iou": -1.0,
        "stopped_early": False,
        "settings": asdict(settings),
    }
    best = _trainable(model)
    start = 0
    found = last_checkpoint(checkpoint_dir) if checkpoint_dir and resume else None
    if found is not None:
        state = torch.load(found, map_location=device, weights_only=True)
        _load_trainable(model, state["trainable"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        history, best = json.loads(state["history"]), state["best"]
        history["settings"] = asdict(settings)
        start = state["epoch"]
    for epoch in range(start, settings.epochs):
        row: dict[str, Any] = {"epoch": epoch + 1}
        row["train_loss"] = _train_epoch(model, train, prep, settings, epoch, optimizer, amp, scaler, device)
        if val is not None:
            scores = evaluate_segmenter(model, val, prep, labels)
            row |= {f"val_{k}": scores[k] for k in ("mean_iou", "pixel_accuracy", "per_class_iou")}
            if row["val_mean_iou"] > history["best_val_mean_iou"]:
                history["best_epoch"], history["best_val_mean_iou"] = epoch + 1, row["val_mean_iou"]
                best = _trainable(model)
        history["epochs"].append(row)
        if checkpoint_dir is not None:
            state = {
                "epoch": epoch + 1,
                "trainable": _trainable(model),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "history": json.dumps(history),
                "best": best,
            }
            _save_checkpoint(Path(checkpoint_dir), epoch + 1, state)
        if on_epoch is not None:
            on_epoch(row)
        waited = epoch + 1 - (history["best_epoch"] or 0)
        if val is not None and settings.patience and waited >= settings.patience and epoch + 1 < settings.epochs:
            history["stopped_early"] = True
            break
    if val is not None:
        _load_trainable(model, best)
    return history


__all__ = [
    "CHECKPOINT_PATTERN",
    "SEGFORMER_LORA_TARGETS",
    "SEGFORMER_MODULES_TO_SAVE",
    "SegmentationTrainSettings",
    "fit_segmenter",
    "new_lora_segmenter",
    "new_segformer",
    "start_at_class_prior",
]
