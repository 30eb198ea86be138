"""Zero-shot classification with CLIP-family models: the labels' request fields, their text
embeddings (computed once per distinct label set, kept in a bounded cache) and the scores.

The reference is transformers' `zero-shot-image-classification` pipeline
(`pipelines/zero_shot_image_classification.py`): each label goes through `hypothesis_template`
(default "This is a photo of {}."), the tokenizer pads to the longest (SigLIP: to 64 tokens, with
truncation), the model's `logits_per_image` are `logit_scale.exp()` times the cosine similarity of
the image and text embeddings (plus `logit_bias` for SigLIP), and the scores are their softmax over
the labels (SigLIP: each one's sigmoid), ranked high to low with ties in the request's order.

The one difference from the pipeline: the text tower runs once per distinct (adapter, template,
labels) and its normalised embeddings are kept, so the forward of a batch is the vision tower only
and a thousand jobs naming the same labels tokenise them once (`tokenizations` counts it).
"""

from __future__ import annotations

import string
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import numpy as np
from pydantic import Field, StrictStr, field_validator

from worker.errors import ErrorCode, WorkerError

DEFAULT_TEMPLATE = "This is a photo of {}."  # the pipeline's default hypothesis_template
MAX_CANDIDATE_LABELS = 1000  # ImageNet's 1,000 classes fit in one job
MAX_LABEL_CHARS = 500
MAX_TEMPLATE_CHARS = 500
MAX_TEXTS = 256  # texts one `embed` job may send
LABEL_CACHE_ENTRIES = 64  # distinct (adapter, template, labels) sets kept
SIGLIP_MAX_LENGTH = 64  # the pipeline's padding="max_length" length for SigLIP

Label = Annotated[StrictStr, Field(min_length=1, max_length=MAX_LABEL_CHARS)]
CandidateLabels = Annotated[
    list[Label],
    Field(
        min_length=1,
        max_length=MAX_CANDIDATE_LABELS,
        description=f"labels to choose from (1 to {MAX_CANDIDATE_LABELS}, each up to {MAX_LABEL_CHARS} characters)",
    ),
]
Texts = Annotated[
    list[Label],
    Field(min_length=1, max_length=MAX_TEXTS, description=f"texts to embed (1 to {MAX_TEXTS})"),
]
Template = Annotated[
    StrictStr,
    Field(
        min_length=2,
        max_length=MAX_TEMPLATE_CHARS,
        description='each label replaces its one "{}" (literal braces doubled: "{{" "}}")',
    ),
]


def check_template(template: str) -> str:
    """A hypothesis template with exactly one bare `{}` field: no index, attribute, conversion or format
    spec (str.format would otherwise reach into the label's attributes), and braces balanced.

    Raises:
        ValueError: naming what is wrong (pydantic turns it into INVALID_INPUT on the field).
    """
    try:
        fields = [f for f in string.Formatter().parse(template) if f[1] is not None]
    except ValueError as exc:
        raise ValueError(f"not a format string ({exc}); write literal braces as {{{{ and }}}}") from None
    if len(fields) != 1 or fields[0][1:] != ("", "", None):
        raise ValueError('must hold exactly one "{}" (no name, index or format spec inside it)')
    return template


class ZeroShotFields:
    """The zero-shot request fields, mixed into the task's request model (pydantic)."""

    candidate_labels: CandidateLabels
    hypothesis_template: Template = Field(DEFAULT_TEMPLATE, description="how a label becomes a sentence")

    @field_validator("hypothesis_template")
    @classmethod
    def _template(cls, value: str) -> str:
        return check_template(value)


def sentences(labels: Sequence[str], template: str) -> list[str]:
    return [template.format(label) for label in labels]


def is_siglip(config: Any) -> bool:
    return "siglip" in getattr(config, "model_type", "")  # the pipeline's own test


def tokenizer_kwargs(config: Any) -> dict[str, Any]:
    """The pipeline's tokenizer arguments for the model (SigLIP was trained on 64-token padded texts)."""
    if is_siglip(config):
        return {"padding": "max_length", "max_length": SIGLIP_MAX_LENGTH, "truncation": True}
    return {"padding": True}


def max_text_tokens(config: Any) -> int:
    text = getattr(config, "text_config", config)
    return int(getattr(text, "max_position_embeddings", 0) or 0)


def normalized(vectors: np.ndarray) -> np.ndarray:
    """Each row over its L2 norm, in float32, as the model's forward normalises its embeddings."""
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.sqrt(np.sum(np.square(vectors), axis=-1, keepdims=True))


def logits_per_image(image_embeds: np.ndarray, text_embeds: np.ndarray, scale: float, bias: float | None) -> np.ndarray:
    """(images, labels) logits from normalised embeddings, as CLIPModel / SiglipModel compute them."""
    logits = (text_embeds @ image_embeds.T) * np.float32(scale)
    if bias is not None:
        logits = logits + np.float32(bias)
    return logits.T


def probabilities(logits: np.ndarray, sigmoid: bool) -> np.ndarray:
    """Softmax over the labels (CLIP), or each label's sigmoid (SigLIP), in float64 for stability."""
    logits = np.asarray(logits, dtype=np.float64)
    if sigmoid:
        return 1.0 / (1.0 + np.exp(-logits))
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def ranked(scores: Sequence[float], labels: Sequence[str]) -> list[dict[str, Any]]:
    """[{"score", "label"}] high to low; equal scores keep the request's order (a stable sort, as the pipeline's)."""
    order = sorted(range(len(labels)), key=lambda i: -scores[i])
    return [{"score": float(scores[i]), "label": labels[i]} for i in order]


LabelKey = tuple[str | None, str, tuple[str, ...]]


class LabelEmbeddings:
    """A bounded LRU of label sets' normalised text embeddings, keyed by (adapter, template, labels).

    `compute(sentences) -> (labels, D) array` runs on a miss, outside the cache's lock but once per
    key: concurrent jobs asking for the same key wait for the first one's result.
    `tokenizations` counts misses (each tokenises its sentences once), `hits` the rest.
    """

    def __init__(self, entries: int = LABEL_CACHE_ENTRIES) -> None:
        self.entries = entries
        self.tokenizations = 0
        self.hits = 0
        self._lock = threading.Lock()
        self._store: OrderedDict[LabelKey, np.ndarray] = OrderedDict()
        self._pending: dict[LabelKey, threading.Lock] = {}

    def get(self, key: LabelKey, compute: Callable[[list[str]], np.ndarray]) -> np.ndarray:
        with self._lock:
            found = self._lookup(key)
            if found is not None:
                return found
            pending = self._pending.setdefault(key, threading.Lock())
        with pending:
            with self._lock:
                found = self._lookup(key)
                if found is not None:
                    return found
                self.tokenizations += 1
            try:
                vectors = normalized(compute(sentences(key[2], key[1])))
                vectors.setflags(write=False)
            finally:
                with self._lock:
                    self._pending.pop(key, None)
            with self._lock:
                self._store[key] = vectors
                while len(self._store) > self.entries:
                    self._store.popitem(last=False)
            return vectors

    def _lookup(self, key: LabelKey) -> np.ndarray | None:
        found = self._store.get(key)
        if found is not None:
            self._store.move_to_end(key)
            self.hits += 1
        return found

    def drop_adapter(self, adapter: str) -> None:
        """Forget an adapter's label sets (its weights changed or it was removed)."""
        with self._lock:
            for key in [k for k in self._store if k[0] == adapter]:
                del self._store[key]

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"tokenizations": self.tokenizations, "hits": self.hits, "entries": len(self._store)}


def too_many_tokens(lengths: Sequence[int], limit: int, field: str = "candidate_labels") -> WorkerError | None:
    """INVALID_INPUT naming the first sentence longer than the text tower reads (CLIP's pipeline would fail)."""
    for index, length in enumerate(lengths):
        if limit and length > limit:
            return WorkerError(
                ErrorCode.INVALID_INPUT,
                f"{field}[{index}]: {length} tokens{' with the template' if field == 'candidate_labels' else ''}; "
                f"the model reads at most {limit}",
                field=f"{field}[{index}]",
            )
    return None


def zero_shot_predictions(
    image_embeds: np.ndarray, label_embeds: np.ndarray, labels: Sequence[str], scale: float, bias: float | None
) -> list[list[dict[str, Any]]]:
    """Per image, the pipeline's answer: the labels ranked by score. `image_embeds` are the vision tower's
    features (not normalised), `label_embeds` the cache's normalised text embeddings."""
    logits = logits_per_image(normalized(image_embeds), label_embeds, scale, bias)
    scores = probabilities(logits, sigmoid=bias is not None)
    return [ranked(row.tolist(), labels) for row in scores]
