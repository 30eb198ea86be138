"""Adapters that appear, change and disappear while the worker runs, through RunPod's local API.

The worker starts on an empty adapters folder. An adapter published afterwards (written elsewhere,
then renamed into place: worker.adapters.publish_folder) answers its first request; republished
with other weights it answers with them; removed, it is UNKNOWN_ADAPTER. A half-copied folder
(truncated adapter_model.safetensors) answers ADAPTER_INCOMPLETE, the worker stays healthy, and once
the copy completes the adapter is served. FASTBACKEND_ADAPTER_RECHECK_MS=0: every request re-checks.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import ADAPTER_EXAMPLES, digit

from fastbackend.local import serve_api
from worker.adapters import publish_folder, staging_folder


def publish(source, adapters_dir, name):
    staged = staging_folder(adapters_dir / name)
    shutil.copytree(source, staged, dirs_exist_ok=True)
    publish_folder(staged, adapters_dir / name)


def logits(answer) -> np.ndarray:
    assert answer["status"] == "COMPLETED", answer
    return np.array(answer["output"]["predictions"][0]["logits"])


@pytest.fixture(scope="module")
def live(root, models_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("live") / "adapters"
    folder.mkdir()
    env = {
        "FASTBACKEND_BASE_MODEL": str(models_dir / "base"),
        "FASTBACKEND_ADAPTERS_DIR": str(folder),
        "FASTBACKEND_ADAPTER_RECHECK_MS": "0",
    }
    with serve_api(root, env=env, log_file=folder.parent / "api.log") as api:
        yield api, folder


def test_published_rewritten_and_removed_adapters_are_served_as_they_are_now(live, models_dir):
    api, folder = live
    image, label = digit("inverted", ADAPTER_EXAMPLES[1])
    job = {"input": {"images": image, "adapter": "fresh", "return_logits": True}}
    assert api.runsync(job)["error"].startswith("UNKNOWN_ADAPTER")
    publish(models_dir / "adapters" / "inverted", folder, "fresh")
    first = api.runsync(job)
    assert first["output"]["predictions"][0]["label"] == str(label), "served on its first request"
    publish(models_dir / "adapters" / "rot90", folder, "fresh")  # republished: other weights
    publish(models_dir / "adapters" / "rot90", folder, "reference")
    rewritten = logits(api.runsync(job))
    assert np.abs(rewritten - logits(first)).max() > 1e-3, "the rewritten adapter answers with its new weights"
    reference = logits(api.runsync({"input": {**job["input"], "adapter": "reference"}}))
    assert np.abs(rewritten - reference).max() <= 1e-6
    shutil.rmtree(folder / "fresh")
    gone = api.runsync(job)
    assert gone["status"] == "FAILED" and gone["error"].startswith("UNKNOWN_ADAPTER"), gone


def test_a_half_copied_adapter_is_a_coded_error_then_served_once_complete(live, models_dir):
    api, folder = live
    source = models_dir / "adapters" / "inverted"
    half = folder / "half"
    shutil.copytree(source, half)  # copied in place, not published: the worst case
    weights = (source / "adapter_model.safetensors").read_bytes()
    (half / "adapter_model.safetensors").write_bytes(weights[: len(weights) // 2])
    image, label = digit("inverted", ADAPTER_EXAMPLES[1])
    job = {"input": {"images": image, "adapter": "half"}}
    answer = api.runsync(job)
    assert answer["status"] == "FAILED" and answer["error"].startswith("ADAPTER_INCOMPLETE"), answer
    assert "adapter_model.safetensors" in answer["error"]
    health = api.runsync({"input": {"op": "health"}})
    assert health["status"] == "COMPLETED" and health["output"]["ready"]
    (half / "adapter_model.safetensors").write_bytes(weights)  # the copy completes: retried, served
    done = api.runsync(job)
    assert done["status"] == "COMPLETED" and done["output"]["predictions"][0]["label"] == str(label), done
