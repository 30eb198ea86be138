"""The embedded default models: accuracy thresholds and bit-identical rebuilds."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from exported.demo_models import load_digit_task
from exported.inference import attach_adapter, load_base_model, model_fingerprint, predict_logits, read_adapter_meta
from exported.preprocess import build_eval_transform, read_preprocess_config, to_pixel_values
from fastbackend.mainjob import DEMO_NOTEBOOK


def _accuracy(model, models_dir: Path, task: str, adapter: str | None) -> float:
    config = read_preprocess_config(models_dir / "base")
    images, labels = load_digit_task(task, "test")
    logits = predict_logits(model, to_pixel_values(images, build_eval_transform(config), config), adapter)
    return float((logits.argmax(1) == labels).mean())


@pytest.fixture(scope="module")
def served(models_dir):
    base_dir = models_dir / "base"
    model = load_base_model(base_dir)
    names = sorted(p.name for p in (models_dir / "adapters").iterdir())
    for name in names:
        model = attach_adapter(model, models_dir / "adapters" / name, name, model_fingerprint(base_dir))
    return model, names


def test_base_reaches_95_percent_on_digits(served, models_dir):
    model, _ = served
    assert _accuracy(model, models_dir, "digits", None) >= 0.95


def test_there_are_at_least_two_adapters_each_recording_its_task(served, models_dir):
    _, names = served
    assert len(names) >= 2
    for name in names:
        meta = read_adapter_meta(models_dir / "adapters" / name)
        assert meta["task"] == name and meta["description"] and meta["base_fingerprint"]


@pytest.mark.parametrize("task", ["inverted", "rot90"])
def test_base_fails_on_the_shifted_task_and_the_adapter_recovers(served, models_dir, task):
    model, _ = served
    assert _accuracy(model, models_dir, task, None) <= 0.40
    assert _accuracy(model, models_dir, task, task) >= 0.90


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# Two extra demo builds: make test-full (the training loop's resume test is bit-identical in make test).
@pytest.mark.full
def test_two_builds_with_the_same_seed_are_bit_identical(root, tmp_path):
    from fastbackend.notebooks import execute

    small = {"base_epochs": 2, "adapter_epochs": 2, "adapter_tasks": ["inverted"], "seed": 3}
    builds = []
    for name in ("a", "b"):
        out = tmp_path / name
        execute(root / DEMO_NOTEBOOK, tmp_path / f"{name}.ipynb", {**small, "output_dir": str(out)}, cwd=root)
        builds.append(_digests(out))
    assert "base/model.safetensors" in builds[0] and "adapters/inverted/adapter_model.safetensors" in builds[0]
    assert builds[0] == builds[1]


def test_split_is_fixed_and_disjoint():
    train, _ = load_digit_task("digits", "train")
    test, _ = load_digit_task("digits", "test")
    assert len(train) + len(test) == 1797
    again, _ = load_digit_task("digits", "test")
    assert np.array_equal(test, again)
