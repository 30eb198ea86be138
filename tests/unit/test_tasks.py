"""The task seam without a model: task choice from config.json, geometry, answer-size bounds."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from exported.inference import top_k
from worker.config import ConfigError
from worker.errors import ModelLoadFailed
from worker.limits import encoded_size
from worker.schema import EmbedInput, parse_input
from worker.tasks import TASKS, task_name_for
from worker.tasks.base import processor_geometry
from worker.tasks.classification import ClassificationInput, ImageClassification
from worker.tasks.embeddings import answer_bytes, decode, encode

from .stub_notebooks import stub_functions


def base_with(tmp_path, architectures):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": architectures}))
    return tmp_path


@pytest.mark.parametrize(
    ("architectures", "task"),
    [
        (["ViTForImageClassification"], "image-classification"),
        (["ConvNextForImageClassification"], "image-classification"),
        (["Dinov2Model"], "image-feature-extraction"),
        (["ViTModel"], "image-feature-extraction"),
        (["CLIPVisionModel"], "image-feature-extraction"),
    ],
)
def test_the_task_follows_from_config_architectures(tmp_path, architectures, task):
    assert task_name_for(base_with(tmp_path, architectures)) == task


def test_the_override_wins_and_an_unknown_one_is_refused(tmp_path):
    base = base_with(tmp_path, ["ViTForImageClassification"])
    assert task_name_for(base, "image-feature-extraction") == "image-feature-extraction"
    with pytest.raises(ConfigError, match="FASTBACKEND_TASK='segment'.*known: image-classification"):
        task_name_for(base, "segment")


def test_an_architecture_no_task_serves_is_one_line_naming_it(tmp_path):
    with pytest.raises(ModelLoadFailed, match="BertForMaskedLM"):
        task_name_for(base_with(tmp_path, ["BertForMaskedLM"]))


def test_task_names_are_pipeline_names():
    from transformers.pipelines import SUPPORTED_TASKS

    assert set(TASKS) <= set(SUPPORTED_TASKS)


def test_geometry_records_the_resize_and_the_centre_crop():
    config = SimpleNamespace(resize="shortest_edge", resize_size=(72, 0), center_crop=(64, 64))
    fns = SimpleNamespace(resize_target=lambda h, w, c: (72, 108))
    meta = processor_geometry((427, 640), config, fns)
    assert meta.original_size == (427, 640) and meta.resized_size == (72, 108)
    assert meta.crop == (4, 22, 64, 64) and meta.input_size == (64, 64)


def test_the_classification_bound_holds_for_the_answer_it_bounds():
    task = ImageClassification(stub_functions())
    task.labels = ["a" * 300, "b", "c"]
    request = ClassificationInput(images=["x"] * 3, top_k=3, return_logits=True)
    logits = np.random.default_rng(0).normal(size=(3, 3)).astype(np.float32) * 1e-7
    task.fns = SimpleNamespace(top_k=top_k)  # the notebooks' ranking: the answer's real shape
    body = {"status": "success", "op": "predict", "adapter": None, "timings": {"decode_ms": 1.0}}
    body.update(task.postprocess({"logits": logits}, [None] * 3, request))
    assert encoded_size(body) <= task.output_bytes(request, [(10, 10)] * 3)


@pytest.mark.parametrize("encoding_format", ["float", "base64"])
def test_64_vectors_of_1024_fit_the_result_limit_and_the_bound_holds(encoding_format):
    vectors = np.random.default_rng(0).normal(size=(64, 1024)).astype(np.float32) * 1e-7
    request = parse_input({"op": "embed", "images": "x", "encoding_format": encoding_format})
    assert isinstance(request, EmbedInput)
    body = {"status": "success", "op": "embed", "adapter": None, **encode(vectors, request, "pooler_output")}
    size = encoded_size(body)
    assert size <= answer_bytes(64, 1024, encoding_format) < 18_000_000
    assert np.array_equal(np.stack([decode(e) for e in body["embeddings"]]), vectors)


def test_normalize_gives_unit_vectors_and_zero_stays_zero():
    request = parse_input({"op": "embed", "images": "x", "normalize": True})
    vectors = np.array([[3.0, 4.0], [0.0, 0.0]], np.float32)
    out = np.stack([decode(e) for e in encode(vectors, request, "")["embeddings"]])
    assert np.allclose(out, [[0.6, 0.8], [0.0, 0.0]])


def test_embed_refuses_an_unknown_encoding_naming_the_field():
    from worker.errors import WorkerError

    with pytest.raises(WorkerError) as caught:
        parse_input({"op": "embed", "images": "x", "encoding_format": "float16"})
    assert caught.value.field == "encoding_format"


def test_each_training_contract_names_functions_that_exist():
    import importlib

    from worker.tasks import TASKS

    declared = {name: task.training for name, task in TASKS.items() if task.training is not None}
    assert {"image-classification", "image-feature-extraction", "object-detection"} <= set(declared)
    for name, training in declared.items():
        assert training.dataset and training.loss and training.metrics, name
        for ref in (*training.readers, training.evaluate, *([training.trainer] if training.trainer else [])):
            module, _, function = ref.partition(":")
            assert callable(getattr(importlib.import_module(module), function)), f"{name}: {ref}"
