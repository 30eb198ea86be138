"""FASTBACKEND_BASE_MODEL=org/name: served offline from a hub cache laid out as huggingface_hub writes it.

The test lays the cache out itself under HF_HOME (hub/models--org--name/refs/main naming a revision,
snapshots/<revision>/ holding the files) and runs the real handler with `--test_input`. A hub id
missing from the cache stops setup with one line naming the id and the cache folder.
"""

from __future__ import annotations

import shutil

from conftest import png_b64
from fixtures.architectures import build

from fastbackend.local import run_test_input

REVISION = "0123456789abcdef0123456789abcdef01234567"


def lay_out_cache(hf_home, repo_id: str, model_dir) -> None:
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    shutil.copytree(model_dir, repo / "snapshots" / REVISION)


def test_hub_id_is_served_from_the_local_cache(root, tmp_path):
    import numpy as np

    lay_out_cache(tmp_path / "hf", "fastbackend-test/tiny-vit", build("vit", tmp_path / "model"))
    image = png_b64(
        np.random.default_rng(0).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    )  # small: RunPod echoes the input
    env = {
        "HF_HOME": str(tmp_path / "hf"),
        "FASTBACKEND_BASE_MODEL": "fastbackend-test/tiny-vit",
        "FASTBACKEND_ADAPTERS_DIR": str(tmp_path / "no-adapters"),
    }
    run = run_test_input({"input": {"images": image}}, root, env)
    assert run.returncode == 0, run.log[-2000:]
    assert run.output["predictions"][0]["label"] in {"cat", "dog", "fish", "bird", "tree"}


def test_hub_id_missing_from_the_cache_is_one_line(root, tmp_path):
    env = {"HF_HOME": str(tmp_path / "hf"), "FASTBACKEND_BASE_MODEL": "fastbackend-test/not-cached"}
    run = run_test_input({"input": {"op": "ping"}}, root, env)
    assert run.returncode != 0
    failure = [line for line in run.log.splitlines() if line.startswith("fastbackend: setup failed")]
    assert len(failure) == 1, run.log[-2000:]
    assert "fastbackend-test/not-cached" in failure[0] and str(tmp_path / "hf" / "hub") in failure[0]
    assert "Traceback" not in run.log
