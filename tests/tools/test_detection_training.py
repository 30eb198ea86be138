"""Detection training (fastbackend/training/detection.py) on a tiny RT-DETR and a few digit scenes.

In `make test`: a LoRA adapter (plus the heads) trained 2 epochs, and the same run cut after epoch 1
and resumed from its checkpoint, end with bit-identical weights and the same history; the same
scenes as a COCO dataset and in YOLO format load as the same training set (the loader's summary)
and score the same mAP; a trained adapter, saved and served by the generated handler, answers as
it did at its last validation (the base's frozen batch norms keep their statistics in training:
an adapter does not carry them).
"""

from __future__ import annotations

import pytest

from fastbackend.training.detection import (
    DetectionTraining,
    default_augmentation,
    evaluate,
    fit,
    head_names,
    lora_detector,
)
from fastbackend.training.detection_demo import small_detector, write_scene_dataset, write_yolo
from worker.detection.datasets import load_yolo
from worker.detection.detector import Detector

SIZE = 64


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: a tiny model's steps are too short for two, which on a loaded 2-core machine
    fight for the cores (measured: 1-2 s an epoch on one thread, about ten times that on two)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return write_scene_dataset(tmp_path_factory.mktemp("scenes"), {"train": 8, "val": 4}, size=SIZE)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    model, processor = small_detector("rt_detr", size=SIZE, width=16)
    folder = tmp_path_factory.mktemp("base")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


class Interrupted(Exception):
    pass


def _run(base_dir, scenes, checkpoints, *, resume=False, stop_after=None):
    detector = Detector.load(base_dir)
    detector.model = lora_detector(detector.model, rank=4, seed=0)
    settings = DetectionTraining(epochs=2, batch_size=4, lr=1e-2, head_lr=1e-2, patience=0, seed=3)

    def on_epoch(row):
        if stop_after is not None and row["epoch"] == stop_after:
            raise Interrupted

    history = fit(
        detector,
        scenes.split("train"),
        scenes.split("val"),
        settings,
        augment=default_augmentation(),
        checkpoint_dir=checkpoints,
        resume=resume,
        on_epoch=on_epoch,
    )
    trained = {n: p.detach().clone() for n, p in detector.model.named_parameters() if p.requires_grad}
    return trained, history, detector


@pytest.fixture(scope="module")
def whole(base_dir, scenes, tmp_path_factory):
    """An uninterrupted run: (trainable weights, history, the trained detector)."""
    return _run(base_dir, scenes, tmp_path_factory.mktemp("whole"))


@pytest.fixture(scope="module")
def cut(base_dir, scenes, tmp_path_factory):
    """The checkpoint folder of the same run stopped after epoch 1."""
    folder = tmp_path_factory.mktemp("cut")
    with pytest.raises(Interrupted):
        _run(base_dir, scenes, folder, stop_after=1)
    return folder


def test_resumed_after_epoch_1_ends_bit_identical_to_an_uninterrupted_run(base_dir, scenes, whole, cut):
    whole, whole_history, _ = whole
    resumed, resumed_history, _ = _run(base_dir, scenes, cut, resume=True)
    assert whole.keys() == resumed.keys() and any("lora_" in n for n in whole)
    assert any("modules_to_save" in n for n in whole), "the heads train with the adapter"
    changed = [n for n in whole if "lora_B" in n and whole[n].abs().sum() > 0]
    assert changed, "training moved nothing"
    assert all((whole[n] == resumed[n]).all() for n in whole)
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in whole_history["epochs"]]
    assert [{k: v for k, v in row.items() if k != "seconds"} for row in resumed_history["epochs"]] == strip
    assert resumed_history["best_epoch"] == whole_history["best_epoch"]


def test_resume_refuses_other_settings(base_dir, scenes, cut):
    detector = Detector.load(base_dir)
    other = DetectionTraining(epochs=5)
    with pytest.raises(ValueError, match="other settings"):
        fit(detector, scenes.split("train"), scenes.split("val"), other, checkpoint_dir=cut, resume=True)


def test_the_heads_are_the_architectures(base_dir):
    detector = Detector.load(base_dir)
    names = head_names(detector.model)
    assert "model.decoder.class_embed.0" in names and "model.enc_score_head" in names


def test_coco_and_yolo_give_the_same_training_set_and_the_same_scores(base_dir, scenes, tmp_path):
    yolo = load_yolo(write_yolo(scenes, tmp_path / "yolo"))
    assert scenes.summary() == yolo.summary() and "train: 8 images" in scenes.summary()
    assert [(i.path.name, i.labels) for i in scenes.items] == [(i.path.name, i.labels) for i in yolo.items]
    detector = Detector.load(base_dir)
    ours, theirs = evaluate(detector, scenes.split("val")), evaluate(detector, yolo.split("val"))
    assert (ours["map"], ours["map_50"], ours["per_class"]) == (theirs["map"], theirs["map_50"], theirs["per_class"])


def test_a_trained_adapter_is_served_with_the_answers_it_gave_in_training(base_dir, scenes, whole, tmp_path):
    import base64
    from dataclasses import replace

    from exported.handler import WORKER as GENERATED
    from exported.train_adapter import save_adapter
    from fastbackend.training.detection import read_image
    from worker.config import WorkerConfig
    from worker.runtime import Worker

    detector = whole[2]
    save_adapter(detector.model, tmp_path / "adapters" / "tiny", base_dir=base_dir, base_name="tiny",
                 task="object-detection", description="test")  # fmt: skip
    from PIL import Image

    val = scenes.split("val").items
    expected = detector.detect([Image.fromarray(read_image(i.path)) for i in val], threshold=0.05, float_boxes=True)
    base_answers = Detector.load(base_dir).detect([Image.fromarray(read_image(i.path)) for i in val], threshold=0.05)
    config = WorkerConfig(base_model=str(base_dir), adapters_dir=str(tmp_path / "adapters"), log_level="ERROR")
    worker = Worker(GENERATED.functions).setup(replace(config))
    images = [base64.b64encode(i.path.read_bytes()).decode("ascii") for i in val]
    job = {"images": images, "adapter": "tiny", "threshold": 0.05, "float_boxes": True}
    served = worker.handle({"id": "t", "input": job})
    assert served["status"] == "success", served
    for ours, theirs in zip(served["predictions"], expected):
        assert [d["label"] for d in ours] == [d["label"] for d in theirs]
        assert all(abs(a["score"] - b["score"]) < 1e-4 for a, b in zip(ours, theirs))
    base = worker.handle({"id": "b", "input": {"images": images, "threshold": 0.05}})
    assert [[d["label"] for d in p] for p in base["predictions"]] == [[d["label"] for d in p] for p in base_answers]
    assert served["predictions"] != base["predictions"], "the adapter changed nothing"
