"""Zero-shot request fields and scoring, model-free: bounds, the template rule, the label cache."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from worker.zero_shot import (
    DEFAULT_TEMPLATE,
    MAX_CANDIDATE_LABELS,
    LabelEmbeddings,
    ZeroShotFields,
    check_template,
    probabilities,
    ranked,
)


class Request(ZeroShotFields, BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def refused(**fields) -> str:
    started = time.perf_counter()
    with pytest.raises(ValidationError) as caught:
        Request(**fields)
    assert time.perf_counter() - started < 1.0
    return str(caught.value.errors(include_input=False, include_url=False)[0]["loc"])


def test_defaults_are_the_pipelines():
    request = Request(candidate_labels=["cat", "dog"])
    assert request.hypothesis_template == DEFAULT_TEMPLATE == "This is a photo of {}."


@pytest.mark.parametrize(
    ("labels", "where"),
    [
        (["x"] * 10_000, "('candidate_labels',)"),
        (["cat", "y" * 1_000_000], "('candidate_labels', 1)"),
        ([], "('candidate_labels',)"),
        (["cat", 7], "('candidate_labels', 1)"),
        (["cat", None], "('candidate_labels', 1)"),
        (["cat", ["dog"]], "('candidate_labels', 1)"),
        ("cat", "('candidate_labels',)"),
        (["cat", ""], "('candidate_labels', 1)"),
    ],
    ids=["10000-labels", "1MB-label", "empty", "int", "null", "nested", "not-a-list", "empty-label"],
)
def test_hostile_labels_are_refused_naming_the_field(labels, where):
    assert refused(candidate_labels=labels) == where


def test_the_bound_itself_is_accepted():
    assert len(Request(candidate_labels=[f"l{i}" for i in range(MAX_CANDIDATE_LABELS)]).candidate_labels) == 1000


@pytest.mark.parametrize(
    "template",
    ["no placeholder", "{} and {}", "{0.__class__}", "{label}", "{:>10}", "{!r}", "{", "}", "x" * 1000 + "{}"],
)
def test_templates_with_anything_but_one_bare_field_are_refused(template):
    assert refused(candidate_labels=["cat"], hypothesis_template=template) == "('hypothesis_template',)"


@pytest.mark.parametrize("template", ["{}", "a {} photo", "{{braces}} around {}"])
def test_plain_templates_format_as_the_pipeline_does(template):
    assert check_template(template).format("cat") == template.format("cat")


def test_softmax_and_sigmoid_match_torch():
    import torch

    logits = np.array([[3.0, -1.0, 0.5, 0.5]], dtype=np.float32)
    soft = probabilities(logits, sigmoid=False)
    assert np.allclose(soft, torch.from_numpy(logits).softmax(-1).numpy(), atol=1e-7)
    assert np.allclose(probabilities(logits, sigmoid=True), torch.sigmoid(torch.from_numpy(logits)).numpy(), atol=1e-7)


def test_ranking_is_stable_for_ties():
    assert [e["label"] for e in ranked([0.1, 0.4, 0.4, 0.1], ["a", "b", "c", "d"])] == ["b", "c", "a", "d"]


def test_one_computation_per_distinct_label_set_and_a_bounded_lru():
    calls: list[list[str]] = []

    def compute(texts):
        calls.append(texts)
        time.sleep(0.01)
        return np.ones((len(texts), 4), dtype=np.float32)

    cache = LabelEmbeddings(entries=2)
    key = (None, DEFAULT_TEMPLATE, ("cat", "dog"))
    threads = [threading.Thread(target=cache.get, args=(key, compute)) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for _ in range(1000):
        vectors = cache.get(key, compute)
    assert calls == [["This is a photo of cat.", "This is a photo of dog."]]
    assert cache.stats()["tokenizations"] == 1 and np.allclose(np.linalg.norm(vectors, axis=1), 1)
    cache.get(("a", "{}", ("x",)), compute)
    cache.get(("b", "{}", ("x",)), compute)
    assert cache.stats()["entries"] == 2
    cache.get(key, compute)  # evicted: computed again
    assert len(calls) == 4


def test_a_failed_computation_is_not_cached():
    cache = LabelEmbeddings()

    def broken(texts):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        cache.get((None, "{}", ("x",)), broken)
    assert cache.get((None, "{}", ("x",)), lambda t: np.ones((1, 2))).shape == (1, 2)
