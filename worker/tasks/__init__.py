"""Tasks: what one image task adds to the task-neutral worker (decoding, budgets, batching, serving).

One worker serves one base model and its task. The task follows from the base's config.json
(`architectures`, matched against transformers' auto-mappings, in `TASKS` order) unless
`FASTBACKEND_TASK` names one; `health`, `doctor` and an adapter's fastbackend.json report it.
Task names are transformers' pipeline names, and a task's stages mirror a pipeline's
(`preprocess` / `_forward` / `postprocess`), each request field routed to the stage that reads it.

A new task is one module here, `worker/tasks/<name>.py`, plus one line in `TASKS` below. It defines:

1. A request model: a subclass of `worker.schema.PredictInput` (the shared `images` and `adapter`)
   adding the task's own fields, each with bounds and a description (the published schema shows
   them). `extra="forbid"` is inherited: an unknown key is INVALID_INPUT naming it.
2. A subclass of `worker.tasks.base.Task` setting
   - `name`: the pipeline task name, e.g. "image-segmentation";
   - `request`: the model of 1;
   - `training`: a `worker.tasks.base.Training` naming the dataset format and its readers, the
     model's own loss, the metrics and the function computing them, and the trainer (None where
     the task trains and evaluates nothing here; `health` reports it);
   - `mapping`: the name of the transformers auto-mapping (`transformers.models.auto.modeling_auto`,
     e.g. "MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES") whose architectures it serves;
   and implementing
   - `load_model(base, device, dtype) -> model`: `from_pretrained` of the task's model class, in
     eval mode on `device`, raising `ModelLoadFailed` naming the file; sets `self.labels` if any;
   - `forward(model, inputs, adapter) -> Arrays`: one micro-batch. `inputs` are the jobs' model
     inputs concatenated along axis 0 by key; return named arrays whose first axis is the image
     (the batcher hands each job its rows back by slicing every key). No request parameters reach
     it (one forward serves several jobs). Run under `torch.inference_mode()`; with a PeftModel and
     `adapter=None` use `model.disable_adapter()`, else `set_adapter(adapter)` when it changes
     (see `predict_logits` in exported/inference.py);
   - `output_bytes(request, sizes) -> int`: an upper bound of the answer's JSON size from the
     request and each image's (height, width) as its header gives it (EXIF not applied), known
     before any decode or forward; a job over `max_output_bytes` is refused with OUTPUT_TOO_LARGE at
     once; `output_advice` (a phrase) tells the user what to ask for instead;
   - `postprocess(outputs, metas, request) -> dict`: this job's rows -> the task's part of the
     answer (classification: {"predictions": [...]}, one entry per image, in order). The runtime
     adds status, op, adapter and timings, and still measures the real size (check_output).
   - optionally `embed(model, inputs, adapter) -> {"embeddings": (N, D)}` for the `embed` op (by
     default what a classifier head reads, else the backbone's pooled output), with `dimensions`
     and `pooling` (in words) set by `load_model`;
   and, where the notebooks' processor (`read_preprocess_config` ...) is not the model's input:
   - `load_processor(base)`, `channels`, `resize_target(h, w)`, `resample`, `blank_inputs()` and
     `preprocess(image, original_size) -> (Arrays, ImageMeta)`: one decoded upright PIL image
     (mode L or RGB, as `channels` asks) -> inputs with first axis 1 and its `ImageMeta` (upright
     original size, resize and crop geometry). Inputs of different shapes are never batched
     together: the batcher groups by adapter and by every input's shape and dtype.
3. Tests through the local API against transformers' own pipeline for the task on tiny models
   built from configs (tests/worker), and a line in docs/tasks/.

docs/tasks/adding-a-task.md walks through one.
"""

from __future__ import annotations

import json
from pathlib import Path

from worker.config import ENV_VARS, ConfigError
from worker.contract import NotebookFunctions
from worker.errors import ModelLoadFailed
from worker.tasks.base import Arrays, ImageMeta, Task
from worker.tasks.classification import ImageClassification
from worker.tasks.features import ImageFeatureExtraction
from worker.tasks.object_detection import ObjectDetection
from worker.tasks.segmentation import ImageSegmentation
from worker.tasks.zero_shot import ZeroShotImageClassification

# Matching order: the first task whose mapping holds one of the base's architectures serves it;
# image-feature-extraction (every bare backbone) stays last.
TASKS: dict[str, type[Task]] = {
    task.name: task
    for task in (
        ImageClassification,
        ZeroShotImageClassification,
        ImageSegmentation,
        ObjectDetection,
        ImageFeatureExtraction,
    )
}
DEFAULT_TASK = ImageClassification.name  # the embedded default's; schema/input.json publishes its request

__all__ = ["DEFAULT_TASK", "TASKS", "Arrays", "ImageMeta", "Task", "architectures", "select_task", "task_name_for"]


def architectures(base: Path) -> list[str] | None:
    """The base's config.json `architectures` ([] when it names none); None without a config.json."""
    path = base / "config.json"
    if not path.is_file():
        return None
    try:
        found = json.loads(path.read_text()).get("architectures") or []
    except (OSError, ValueError) as exc:
        raise ModelLoadFailed(f"{path}: unreadable ({exc})") from exc
    return [str(a) for a in found]


def _served(task: type[Task]) -> set[str]:
    from transformers.models.auto import modeling_auto

    names: set[str] = set()
    for value in getattr(modeling_auto, task.mapping).values():
        names.update(value if isinstance(value, tuple | list) else (value,))
    return names


def task_name_for(base: Path, override: str = "") -> str:
    """The task serving `base`: `override` (FASTBACKEND_TASK) when set, else the first task whose
    transformers mapping holds one of its architectures.

    Raises:
        ConfigError: the override names no task.
        ModelLoadFailed: no task serves the base's architectures (the message names them).
    """
    if override:
        if override not in TASKS:
            raise ConfigError(f"{ENV_VARS['task']}={override!r}: not a task; known: {', '.join(TASKS)}")
        return override
    found = architectures(base)
    if found is None:  # no model folder: the default task's loader says so, naming the file
        return DEFAULT_TASK
    for name, task in TASKS.items():
        if _served(task) & set(found):
            return name
    raise ModelLoadFailed(
        f"{base / 'config.json'}: architectures {found or '(none)'} match no task this worker serves "
        f"({', '.join(TASKS)}); set {ENV_VARS['task']} to choose one"
    )


def select_task(base: Path, override: str, fns: NotebookFunctions) -> Task:
    """The task serving `base` (see task_name_for), ready to load its processor and model."""
    return TASKS[task_name_for(base, override)](fns)
