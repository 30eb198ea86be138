"""LoRA adapters on a CLIP's vision tower, text tower or both, served through the adapter checks of
every task, against the pipeline on the peft model with the adapter merged."""

from __future__ import annotations

import pytest
from fixtures.clip_models import build
from fixtures.photos import jpeg_b64, variants

pytest.importorskip("worker.tasks.base", reason="needs the task seam (branch seam)")

LABELS = ["cat", "dog", "flower", "building", "the sea"]
TARGETS = {
    "vision": r".*vision_model.*\.(q_proj|v_proj)",
    "text": r".*text_model.*\.(q_proj|v_proj)",
    "both": ["q_proj", "v_proj"],
}


def save_adapter(base, folder, targets, seed):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=targets, init_lora_weights=False)
    get_peft_model(AutoModel.from_pretrained(base), config).save_pretrained(folder)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from exported.handler import WORKER as GENERATED
    from worker.config import WorkerConfig
    from worker.runtime import Worker

    work = tmp_path_factory.mktemp("clip-adapters")
    base = build("clip", work / "base")
    for seed, (name, targets) in enumerate(TARGETS.items(), start=1):
        save_adapter(base, work / "adapters" / name, targets, seed)
    worker = Worker(GENERATED.functions)
    worker.setup(WorkerConfig(base_model=str(base), adapters_dir=str(work / "adapters")))
    return worker, base, work / "adapters"


@pytest.mark.parametrize("adapter", sorted(TARGETS))
def test_adapter_answers_match_the_pipeline_on_the_merged_model(served, adapter):
    import base64
    import io

    from peft import PeftModel
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer, pipeline

    worker, base, adapters = served
    image = jpeg_b64(variants(full=False)["flower"])
    answer = worker.handle({"id": "a", "input": {"images": image, "candidate_labels": LABELS, "adapter": adapter}})
    assert answer["status"] == "success", answer
    base_answer = worker.handle({"id": "b", "input": {"images": image, "candidate_labels": LABELS}})
    merged = PeftModel.from_pretrained(AutoModel.from_pretrained(base), adapters / adapter).merge_and_unload().eval()
    reference = pipeline(
        "zero-shot-image-classification",
        model=merged,
        tokenizer=AutoTokenizer.from_pretrained(base),
        image_processor=AutoImageProcessor.from_pretrained(base),
    )
    theirs = reference(Image.open(io.BytesIO(base64.b64decode(image))), candidate_labels=LABELS)
    ours = answer["predictions"][0]
    assert [e["label"] for e in ours] == [e["label"] for e in theirs]
    assert max(abs(a["score"] - b["score"]) for a, b in zip(ours, theirs)) < 1e-4
    assert ours != base_answer["predictions"][0]  # the adapter changes the answer


def test_an_unknown_adapter_is_refused(served):
    worker, _, _ = served
    answer = worker.handle({"id": "c", "input": {"images": "x", "candidate_labels": LABELS, "adapter": "nope"}})
    assert answer["code"] == "UNKNOWN_ADAPTER"
