"""Training a DETR-family detector (whole, or a LoRA adapter plus its heads) on a detection dataset.

Used by notebooks/detection/03_train_adapter.ipynb and 00_demo_models.ipynb. One loop, `fit`:

- images read upright (EXIF applied, as the worker decodes them), augmented by albumentations with
  `BboxParams(format="coco")` so boxes follow the pixels, then the worker's own processor steps
  (`worker.detection.processor.prepare`: what serving feeds the model), padded per batch with a
  `pixel_mask`; targets as the model's own loss wants them (`class_labels`, `boxes` as normalised
  cx, cy, w, h of the padded image, as transformers' processors write them);
- the model's own loss (Hungarian matching; DETR: CE + L1 + GIoU, RT-DETR: VFL + denoising), AdamW
  with the heads at `head_lr`, gradients clipped, autocast on a GPU (bfloat16, else float16 with a
  scaler);
- after each epoch, the validation split answered through the serving path (`Detector.detect`,
  float boxes) and scored by pycocotools: mAP@[.5:.95], mAP@.5, per-class AP;
- a checkpoint per epoch (`last.pt`: trainable weights, buffers, optimizer, history), resume
  from it (refused when the settings differ), early stopping on `monitor`, the best epoch's
  weights loaded at the end.

Every random draw is seeded from (seed, epoch), so a run resumed after any epoch ends with the
same weights as one never interrupted (tests/tools/test_detection_training.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from worker.detection.datasets import DetectionDataset, DetectionItem
from worker.detection.detector import Detector
from worker.detection.evaluation import mean_average_precision
from worker.detection.processor import DetectionProcessor, prepare

# LoRA's default targets and the heads trained whole (modules_to_save), per `config.model_type`:
# the attention projections; the class and box heads (a new label set needs new class heads).
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "detr": ("q_proj", "v_proj"),
    "conditional_detr": ("q_proj", "v_proj"),
    "yolos": ("query", "value"),
    "rt_detr": ("q_proj", "v_proj", "value_proj", "output_proj"),
    "rt_detr_v2": ("q_proj", "v_proj", "value_proj", "output_proj"),
    "d_fine": ("q_proj", "v_proj", "value_proj", "output_proj"),
}
HEADS: dict[str, tuple[str, ...]] = {
    "detr": ("class_labels_classifier", "bbox_predictor"),
    "conditional_detr": ("class_labels_classifier", "bbox_predictor"),
    "yolos": ("class_labels_classifier", "bbox_predictor"),
    "rt_detr": ("class_embed", "bbox_embed", "enc_score_head", "enc_bbox_head", "denoising_class_embed"),
    "rt_detr_v2": ("class_embed", "bbox_embed", "enc_score_head", "enc_bbox_head", "denoising_class_embed"),
    "d_fine": ("class_embed", "bbox_embed", "enc_score_head", "enc_bbox_head", "denoising_class_embed"),
}
CHECKPOINT = "last.pt"


@dataclass(frozen=True)
class DetectionTraining:
    """The settings of one training run (a resumed run must use the same)."""

    epochs: int = 20
    batch_size: int = 8
    lr: float = 1e-4  # LoRA (or the whole body when training from scratch)
    head_lr: float = 1e-3  # the class and box heads
    weight_decay: float = 1e-4
    grad_clip: float = 0.1
    patience: int = 5  # epochs without a better `monitor` before stopping (0: never stop early)
    monitor: str = "map"  # "map" (mAP@[.5:.95]) or "map_50"
    seed: int = 0
    eval_threshold: float = 0.01  # detections kept for mAP (a low threshold: the curve needs them)
    precision: str = "auto"  # auto: autocast on a GPU; float32: never
    max_minutes: float = 0.0  # stop after the first epoch that ends past this (0: no time budget)


def load_detection_dataset(path: str | Path) -> DetectionDataset:
    """A COCO dataset (a `<split>.json` folder or file) or a YOLO one (a folder with data.yaml or
    classes.txt), told apart by those files; every broken record refused or counted (datasets.py).

    Raises:
        DetectionDatasetError: the first broken record, naming its file.
    """
    from worker.detection.datasets import load_coco, load_yolo

    path = Path(path)
    if path.is_dir() and ((path / "data.yaml").is_file() or (path / "classes.txt").is_file()):
        return load_yolo(path)
    return load_coco(path)


def load_detector(base_dir: str | Path, adapter_dir: str | Path | None = None, *, device: str = "cpu") -> Detector:
    """The base detector as the worker loads it, with a trained adapter (peft) when `adapter_dir` is given."""
    detector = Detector.load(base_dir)
    detector.model = detector.model.to(device)
    if adapter_dir is not None:
        from peft import PeftModel

        detector.model = PeftModel.from_pretrained(detector.model, str(adapter_dir)).eval()
        detector.adapter = detector.model.active_adapter
    return detector


def save_base(model: Any, processor: Any, folder: str | Path) -> Path:
    """A detector and its image processor saved as the worker reads a base (config, weights, processor)."""
    folder = Path(folder)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def check_labels(detector: Detector, dataset: DetectionDataset) -> None:
    """Refuse a dataset whose class names are not the base's, in its order: the worker answers
    with the base's label names, so an adapter trained on others would answer them wrongly.

    Raises:
        ValueError: naming both lists.
    """
    base = tuple(detector.id2label[i] for i in sorted(detector.id2label))
    if base != dataset.names:
        raise ValueError(f"the dataset's classes {list(dataset.names)} are not the base model's {list(base)}")


def read_image(path: Path) -> np.ndarray:
    """An image file as upright RGB uint8 (EXIF orientation applied, as the worker decodes it)."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


def default_augmentation(flip: bool = False) -> Any:
    """Bounding-box-aware augmentations: boxes move with the pixels, those mostly cut off are dropped.

    `flip`: horizontal flips too (not for digits or text, whose class a mirror changes).
    """
    import albumentations as A

    steps = [
        A.Affine(scale=(0.85, 1.15), translate_percent=(-0.06, 0.06), p=0.7),
        A.RandomBrightnessContrast(p=0.3),
    ]
    if flip:
        steps.append(A.HorizontalFlip(p=0.5))
    return A.Compose(steps, bbox_params=A.BboxParams(format="coco", label_fields=["labels"], min_visibility=0.5))


def augmented(item: DetectionItem, augment: Any | None) -> tuple[np.ndarray, list, list]:
    """One item's image, boxes ([x, y, w, h] px) and labels after `augment` (None: as they are)."""
    image = read_image(item.path)
    if augment is None:
        return image, [list(b) for b in item.boxes], list(item.labels)
    out = augment(image=image, bboxes=np.asarray(item.boxes, np.float32).reshape(-1, 4), labels=list(item.labels))
    return out["image"], [list(map(float, b)) for b in out["bboxes"]], [int(v) for v in out["labels"]]


def training_batch(
    samples: Sequence[tuple[np.ndarray, list, list]], processor: DetectionProcessor
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Images, boxes and labels as the model's inputs (padded, with pixel_mask) and loss targets."""
    import torch
    from PIL import Image

    prepared = [prepare(Image.fromarray(image), processor) for image, _, _ in samples]
    height = max(p.pixel_values.shape[1] for p in prepared)
    width = max(p.pixel_values.shape[2] for p in prepared)
    pixels = np.zeros((len(prepared), 3, height, width), np.float32)
    mask = np.zeros((len(prepared), height, width), np.int64)
    targets = []
    for row, (p, (_, boxes, labels)) in enumerate(zip(prepared, samples)):
        h, w = p.pixel_values.shape[1:]
        pixels[row, :, :h, :w], mask[row, :h, :w] = p.pixel_values, p.pixel_mask
        sy, sx = p.resized_size[0] / p.original_size[0], p.resized_size[1] / p.original_size[1]
        cxcywh = [[(x + bw / 2) * sx / width, (y + bh / 2) * sy / height, bw * sx / width, bh * sy / height]
                  for x, y, bw, bh in boxes]  # fmt: skip
        targets.append(
            {
                "class_labels": torch.tensor(labels, dtype=torch.long),
                "boxes": torch.tensor(cxcywh, dtype=torch.float32).reshape(-1, 4),
            }
        )
    return {"pixel_values": torch.from_numpy(pixels), "pixel_mask": torch.from_numpy(mask)}, targets


def head_names(model: Any) -> list[str]:
    """The full names of the architecture's heads in `model` (a ModuleList's members one by one)."""
    import torch

    heads = HEADS.get(model.config.model_type, ())
    names = []
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in heads:
            if isinstance(module, torch.nn.ModuleList):
                names += [f"{name}.{i}" for i in range(len(module))]
            else:
                names.append(name)
    return names


def lora_detector(model: Any, *, rank: int = 8, alpha: int = 16, seed: int = 0, train_heads: bool = True) -> Any:
    """`model` with a fresh LoRA adapter on its attention projections (and its heads trained whole).

    Raises:
        ValueError: no default targets are known for the architecture.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    model_type = model.config.model_type
    if model_type not in LORA_TARGETS:
        raise ValueError(f"no LoRA targets known for model type {model_type!r} (known: {sorted(LORA_TARGETS)})")
    torch.manual_seed(seed)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=list(LORA_TARGETS[model_type]),
        modules_to_save=head_names(model) if train_heads else None,
    )
    return get_peft_model(model, config)


def _is_head(name: str, heads: Sequence[str]) -> bool:
    return any(f".{head}." in f".{name}." for head in heads)


def _optimizer(model: Any, settings: DetectionTraining) -> Any:
    import torch

    heads = HEADS.get(getattr(getattr(model, "config", None), "model_type", ""), ())
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in trainable if not _is_head(n, heads)], "lr": settings.lr},
        {"params": [p for n, p in trainable if _is_head(n, heads)], "lr": settings.head_lr},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=settings.weight_decay)


def _train_mode(model: Any) -> None:
    """Training mode, but batch norms with frozen weights (a LoRA's base) keep their statistics: an
    adapter does not carry the base's buffers, so the served base + adapter would not be the model
    that was validated."""
    import torch

    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not any(
            p.requires_grad for p in module.parameters()
        ):
            module.eval()


def _state(model: Any) -> dict[str, Any]:
    """What training changes: the trainable parameters and every buffer (batch-norm statistics)."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n for n, _ in model.named_buffers()}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k in trainable | buffers}


def evaluate(detector: Detector, dataset: DetectionDataset, threshold: float = 0.01) -> dict[str, Any]:
    """The detector's answers on `dataset` (float boxes) and their mAP@[.5:.95], mAP@.5, per-class AP."""
    from PIL import Image

    answers = []
    for first in range(0, len(dataset.items), 16):
        images = [Image.fromarray(read_image(i.path)) for i in dataset.items[first : first + 16]]
        answers += detector.detect(images, threshold=threshold, float_boxes=True)
    return {**mean_average_precision(dataset, answers), "answers": answers}


def fit(
    detector: Detector,
    train: DetectionDataset,
    val: DetectionDataset,
    settings: DetectionTraining,
    *,
    augment: Any | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train `detector.model`'s trainable parameters on `train`, scored on `val` after each epoch.

    Returns the history: `epochs` (epoch, train_loss, map, map_50, per_class, seconds), `best_epoch`,
    `best` (its scores), `stopped_early` (patience or `max_minutes`; `out_of_time` for the latter).
    The best epoch's weights are in the model at the end.

    Raises:
        ValueError: `resume` with a checkpoint written under other settings, or an empty train split.
    """
    import torch

    if not train.items:
        raise ValueError("the train split has no images")
    from exported.train_adapter import autocast_dtype, epoch_order

    model = detector.model
    if hasattr(model, "peft_config") and detector.adapter is None:
        detector.adapter = model.active_adapter  # validate with the adapter being trained, not the base
    device = next(model.parameters()).device
    dtype = autocast_dtype(device, settings.precision)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    optimizer = _optimizer(model, settings)
    history: dict[str, Any] = {"settings": asdict(settings), "epochs": [], "best_epoch": None, "best": None}
    best_state, waited = None, 0
    path = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir else None
    if resume and path is not None and path.is_file():
        saved = torch.load(path, weights_only=False)
        if saved["history"]["settings"] != history["settings"]:
            raise ValueError(f"{path}: written with other settings {saved['history']['settings']}; use a new folder")
        model.load_state_dict(saved["state"], strict=False)
        optimizer.load_state_dict(saved["optimizer"])
        history, best_state, waited = saved["history"], saved["best_state"], saved["waited"]
    budget_start = time.perf_counter()
    for epoch in range(len(history["epochs"]) + 1, settings.epochs + 1):
        if settings.patience and waited >= settings.patience:
            break
        if settings.max_minutes and time.perf_counter() - budget_start > settings.max_minutes * 60:
            history["out_of_time"] = True
            break
        started = time.perf_counter()
        torch.manual_seed(settings.seed * 100_003 + epoch)  # denoising queries, dropout
        if augment is not None:
            augment.set_random_seed(settings.seed * 100_003 + epoch)
        order = epoch_order(len(train.items), settings.seed, epoch).tolist()
        _train_mode(model)
        losses = []
        for first in range(0, len(order), settings.batch_size):
            samples = [augmented(train.items[i], augment) for i in order[first : first + settings.batch_size]]
            inputs, targets = training_batch(samples, detector.processor)
            if not detector.takes_pixel_mask:
                inputs.pop("pixel_mask")
            inputs = {k: v.to(device) for k, v in inputs.items()}
            targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = model(**inputs, labels=targets).loss
            optimizer.zero_grad(set_to_none=True)
            (scaler.scale(loss) if scaler else loss).backward()
            if scaler:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], settings.grad_clip)
            scaler.step(optimizer) if scaler else optimizer.step()
            if scaler:
                scaler.update()
            losses.append(float(loss.detach()))
        model.eval()
        scores = evaluate(detector, val, settings.eval_threshold)
        row = {
            "epoch": epoch,
            "train_loss": round(float(np.mean(losses)), 6),
            "map": round(scores["map"], 6),
            "map_50": round(scores["map_50"], 6),
            "per_class": scores["per_class"],
            "seconds": round(time.perf_counter() - started, 2),
        }
        history["epochs"].append(row)
        if history["best"] is None or row[settings.monitor] > history["best"][settings.monitor]:
            history["best_epoch"], history["best"], best_state, waited = epoch, row, _state(model), 0
        else:
            waited += 1
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            payload = {"state": _state(model), "optimizer": optimizer.state_dict(), "history": history}
            torch.save({**payload, "best_state": best_state, "waited": waited}, path.with_suffix(".tmp"))
            path.with_suffix(".tmp").replace(path)  # a run killed mid-save keeps the previous checkpoint
        if on_epoch:
            on_epoch(row)
    history["stopped_early"] = len(history["epochs"]) < settings.epochs
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)
    return history


def write_history(history: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(json.dumps(history, indent=2) + "\n")
