"""The task contract (see worker/tasks/__init__.py for what a task module provides)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from worker.contract import NotebookFunctions
from worker.schema import EmbedInput, PredictInput

Arrays = dict[str, np.ndarray]  # named batch-first arrays: every value's first axis is the image


@dataclass(frozen=True)
class Training:
    """The training and evaluation side of a task: what a user's data must look like, what the model
    learns from, and what evaluation reports. Readers, trainers and metrics are named as
    "module:function" (resolved by tests/unit/test_tasks.py; the runtime never imports them).

    - `dataset`: the format, in words (folder layout, manifest columns, what a label is);
    - `readers`: the functions that read and check it (a broken record refused before training);
    - `loss`: the model's own loss, computed by the model from its labels (never hand-written);
    - `metrics`: what evaluation reports; `evaluate`: the function that computes them;
    - `trainer`: where an adapter is trained on it ("" where this project trains none).
    """

    dataset: str
    readers: tuple[str, ...]
    loss: str
    metrics: tuple[str, ...]
    evaluate: str
    trainer: str = ""

    def describe(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "readers": list(self.readers),
            "loss": self.loss,
            "metrics": list(self.metrics),
            "evaluate": self.evaluate,
            "trainer": self.trainer or None,
        }


@dataclass(frozen=True)
class ImageMeta:
    """Where one image's model input came from: what a task needs to place its answer on the photo.

    Sizes are (height, width). `original_size` is the upright image as sent (EXIF orientation
    applied), before any fast-decode reduction. `resized_size` is what the processor's resize made
    of it; `crop` is the (top, left, height, width) window of the resized image the model saw
    (negative top/left where the processor padded a small image), so `crop[2:]` is the input size.
    """

    original_size: tuple[int, int]
    resized_size: tuple[int, int]
    crop: tuple[int, int, int, int]

    @property
    def input_size(self) -> tuple[int, int]:
        return self.crop[2], self.crop[3]


def processor_geometry(original: tuple[int, int], config: Any, fns: NotebookFunctions) -> ImageMeta:
    """The resize and crops of the notebooks' processor (`PreprocessConfig`) for an upright size."""
    height, width = original
    resize = getattr(config, "resize", "exact")
    resized = (height, width) if resize == "none" else tuple(fns.resize_target(height, width, config))
    top, left, (h, w) = 0, 0, resized
    crops = [(config.resize_size[0], config.resize_size[0])] if resize == "crop_pct" else []
    crops += [tuple(config.center_crop)] if getattr(config, "center_crop", None) else []
    for crop_h, crop_w in crops:  # transformers' center_crop: offsets floor((size - crop) / 2)
        top, left, h, w = top + (h - crop_h) // 2, left + (w - crop_w) // 2, crop_h, crop_w
    return ImageMeta((height, width), (int(resized[0]), int(resized[1])), (top, left, h, w))


class Task:
    """One image task served by the worker: its model class, request, and the three stages.

    Subclasses set the class attributes and implement the methods marked "task's own"; the
    notebook processor's methods below serve any task whose model takes `pixel_values` made by
    the notebooks' preprocessing (exported/preprocess.py).
    """

    name: ClassVar[str]  # transformers' pipeline task name, e.g. "image-classification"
    request: ClassVar[type[PredictInput]] = PredictInput  # predict's request: the shared images input + own fields
    embed_request: ClassVar[type[EmbedInput]] = EmbedInput  # the `embed` op's request (zero-shot adds texts)
    # transformers' auto-mapping (transformers.models.auto.modeling_auto) whose architectures this task serves
    mapping: ClassVar[str]
    output_advice: ClassVar[str] = "ask for less"  # what OUTPUT_TOO_LARGE suggests besides fewer images
    training: ClassVar[Training | None] = None  # the dataset format, the model's own loss, the metrics

    def __init__(self, fns: NotebookFunctions) -> None:
        self.fns = fns
        self.config: Any = None  # the WorkerConfig, set by the host before setup (for a task's own settings)
        self.processor: Any = None  # the resolved image processor (load_processor)
        self.transform: Any = None
        self.labels: list[str] = []  # the model's labels, where it has any (load_model)
        self.dimensions = 0  # the embedding's length (load_model)
        self.pooling = ""  # how `embed` pools, in words (load_model)

    # -- setup ---------------------------------------------------------------
    def load_processor(self, base: Path) -> None:
        """Read the base's image processor. Raises WorkerError naming the field it cannot reproduce."""
        self.processor = self.fns.read_preprocess_config(base)
        self.transform = self.fns.build_eval_transform(self.processor)

    @property
    def channels(self) -> int:
        """Channels the decoder makes (1 = L, 3 = RGB)."""
        return getattr(self.processor, "num_channels", 3)

    def resize_target(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) the processor's resize makes of an upright image: fast decode's floor."""
        return self.fns.resize_target(height, width, self.processor)

    @property
    def resample(self) -> int:
        return getattr(self.processor, "resample", 2)

    def blank_inputs(self) -> Arrays:
        """One image's worth of model inputs of zeros, for the warm-up forward."""
        c = self.processor
        return {"pixel_values": np.zeros((1, c.num_channels, c.height, c.width), dtype=np.float32)}

    def load_model(self, base: Path, device: str, dtype: str) -> Any:  # task's own
        """The base model in eval mode on `device`; sets `labels`. Raises ModelLoadFailed naming the file."""
        raise NotImplementedError

    # -- the three stages ----------------------------------------------------
    def preprocess(self, image: Any, original_size: tuple[int, int]) -> tuple[Arrays, ImageMeta]:
        """One decoded upright image (PIL, in `channels`' mode) -> its model inputs (first axis 1) and
        metadata. Runs on the image pool, one image per thread; request parameters do not reach it."""
        pixels = self.fns.to_pixel_values([image], self.transform, self.processor)
        return {"pixel_values": pixels}, processor_geometry(original_size, self.processor, self.fns)

    def forward(self, model: Any, inputs: Arrays, adapter: str | None) -> Arrays:  # task's own
        """Inputs of one micro-batch (jobs' images concatenated by key) -> batch-first named outputs.
        Takes no request parameters: one forward serves several jobs."""
        raise NotImplementedError

    def embed(self, model: Any, inputs: Arrays, adapter: str | None) -> Arrays:
        """The `embed` op's forward: {"embeddings": (N, D) float32}. By default what a classifier's
        head reads, else the backbone's pooled output (`pooling` says which)."""
        from worker.tasks.torch_forward import classification_head, head_features, pooled_output, run, to_numpy

        pool = head_features if classification_head(model) is not None else pooled_output
        return {"embeddings": to_numpy(run(model, inputs, adapter, pool))}

    def output_bytes(self, request: PredictInput, sizes: Sequence[tuple[int, int]]) -> int:  # task's own
        """An upper bound of the answer's JSON size from the request and each image's (height, width) as
        its header gives it (EXIF orientation not applied), known before any decode (OUTPUT_TOO_LARGE early)."""
        raise NotImplementedError

    def postprocess(self, outputs: Arrays, metas: Sequence[ImageMeta], request: PredictInput) -> dict[str, Any]:
        """This job's outputs (its rows only) -> the answer's task part, e.g. {"predictions": [...]}."""
        raise NotImplementedError  # task's own

    def describe(self) -> dict[str, Any]:
        """What `health` and `doctor` report about the task beyond its name."""
        return {
            "name": self.name,
            "labels": len(self.labels),
            "embedding": {"dimensions": self.dimensions, "pooling": self.pooling},
            "training": self.training.describe() if self.training else None,
        }
