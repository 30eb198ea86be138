"""One logic, five surfaces: 200 held-out images per adapter give the same answers everywhere.

(a) the exported functions called directly, as the notebook does; (b) a papermill run of
notebooks/02_inference.ipynb; (c) the in-process handler; (d) `--test_input`; (e) RunPod's
local API. Top-1 must be identical and logits within 1e-6 of (a); a difference names the
first image that differs.

`--test_input` shows a job's result only through RunPod's log line, which RunPod truncates
past 4096 characters: that surface is checked on the first TEST_INPUT_COUNT images of each
set, sent as one job of that size; every other surface sees all 200 in one job.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import png_b64

from fastbackend.local import run_test_input, serve_api

COUNT = 200
TEST_INPUT_COUNT = 8
TOLERANCE = 1e-6
TARGETS = {"base": ("digits", None), "inverted": ("inverted", "inverted"), "rot90": ("rot90", "rot90")}


@pytest.fixture(scope="module")
def held_out():
    from exported.demo_models import load_digit_task

    return {name: load_digit_task(task, "test")[0][:COUNT] for name, (task, _) in TARGETS.items()}


@pytest.fixture(scope="module")
def jobs(held_out):
    return {
        name: {
            "id": f"parity-{name}",
            "input": {
                "images": [png_b64(i) for i in held_out[name]],
                "return_logits": True,
                **({"adapter": a} if a else {}),
            },
        }
        for name, (_, a) in TARGETS.items()
    }


@pytest.fixture(scope="module")
def direct(models_dir, held_out):
    from exported.inference import attach_adapter, load_base_model, model_fingerprint, predict_logits
    from exported.preprocess import build_eval_transform, read_preprocess_config, to_pixel_values

    config = read_preprocess_config(models_dir / "base")
    model = load_base_model(models_dir / "base")
    for name in ("inverted", "rot90"):
        model = attach_adapter(model, models_dir / "adapters" / name, name, model_fingerprint(models_dir / "base"))
    transform = build_eval_transform(config)
    return {
        name: predict_logits(model, to_pixel_values(held_out[name], transform, config), adapter)
        for name, (_, adapter) in TARGETS.items()
    }


@pytest.fixture(scope="module")
def env(models_dir):
    return {
        "FASTBACKEND_BASE_MODEL": str(models_dir / "base"),
        "FASTBACKEND_ADAPTERS_DIR": str(models_dir / "adapters"),
        "FASTBACKEND_MAX_BATCH": str(COUNT),
    }


def logits_of(output: dict) -> np.ndarray:
    return np.array([p["logits"] for p in output["predictions"]], dtype=np.float64)


def assert_same(surface: str, name: str, got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape, f"{surface}/{name}: shape {got.shape} vs {expected.shape}"
    top1 = got.argmax(1) != expected.argmax(1)
    far = np.abs(got - expected).max(axis=1) > TOLERANCE
    bad = np.flatnonzero(top1 | far)
    if len(bad):
        i = bad[0]
        pytest.fail(
            f"{surface}/{name}: image {i} differs: top-1 {got[i].argmax()} vs {expected[i].argmax()}, "
            f"max |delta logit| {np.abs(got[i] - expected[i]).max():.3g} ({len(bad)} images differ)"
        )


def test_papermill_run_of_the_inference_notebook(root, models_dir, direct, tmp_path):
    from fastbackend.notebooks import execute

    out = tmp_path / "logits.npz"
    execute(
        root / "notebooks" / "02_inference.ipynb",
        tmp_path / "02.ipynb",
        {
            "base_model": str(models_dir / "base"),
            "adapters_dir": str(models_dir / "adapters"),
            "save_logits_to": str(out),
            "save_logits_count": COUNT,
            "embed_on": "",  # the logits are compared here; the embeddings' recall: test_pipeline_evaluate.py
        },
        cwd=root,
    )
    saved = np.load(out)
    for name in TARGETS:
        assert_same("papermill", name, saved[name].astype(np.float64), direct[name])


def test_in_process_handler(make_worker, jobs, direct):
    worker = make_worker(max_batch=COUNT)
    for name, job in jobs.items():
        assert_same("handler", name, logits_of(worker.handle(job)), direct[name])


# One process start per set: the adapter set always, the other two under make test-full.
@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n == "inverted" else pytest.mark.full) for n in TARGETS])
def test_test_input(root, env, jobs, direct, name):
    small = {**jobs[name]["input"], "images": jobs[name]["input"]["images"][:TEST_INPUT_COUNT]}
    run = run_test_input({"input": small}, root, env)
    assert run.returncode == 0, run.log[-2000:]
    assert_same("--test_input", name, logits_of(run.output), direct[name][:TEST_INPUT_COUNT])


def test_local_api(root, env, jobs, direct):
    with serve_api(root, env=env) as api:
        for name, job in jobs.items():
            answer = api.runsync({"input": job["input"]})
            assert answer["status"] == "COMPLETED", answer
            assert_same("local API", name, logits_of(answer["output"]), direct[name])
