"""RunPod Hub files: .runpod/hub.json and .runpod/tests.json in the Hub's format, in step with
the worker's configuration, and every tests.json case answered by the local API in time."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import time

import numpy as np
import pytest
from conftest import ADAPTER_EXAMPLES, digit

from worker.config import ENV_VARS, ConfigError, WorkerConfig

CATEGORIES = {"audio", "embedding", "language", "video", "image"}
INPUT_TYPES = {"string", "number", "boolean", "huggingface"}


@pytest.fixture(scope="module")
def hub(root):
    return json.loads((root / ".runpod" / "hub.json").read_text())


@pytest.fixture(scope="module")
def cases(root):
    return json.loads((root / ".runpod" / "tests.json").read_text())


def _env_value(entry_input, value):
    if entry_input["type"] == "boolean":
        return entry_input["trueValue"] if value else entry_input["falseValue"]
    return str(value)


# -- hub.json ---------------------------------------------------------------------------
def test_hub_json_has_the_required_fields(hub):
    assert {"title", "description", "type", "category", "config"} <= set(hub)
    assert hub["type"] == "serverless" and hub["category"] in CATEGORIES
    config = hub["config"]
    assert config["runsOn"] == "GPU" and isinstance(config["containerDiskInGb"], int)
    assert isinstance(config["gpuCount"], int) and config["gpuCount"] >= 1 and config["gpuIds"].strip()
    assert all(isinstance(v, str) for v in config["allowedCudaVersions"])


def test_every_fastbackend_variable_is_an_input_and_nothing_else(hub):
    keys = [entry["key"] for entry in hub["config"]["env"]]
    assert keys == list(ENV_VARS.values()), "hub.json's env must list worker/config.py's ENV_VARS, in order"
    for entry in hub["config"]["env"]:
        spec = entry["input"]
        assert {"name", "type", "description", "default"} <= set(spec) and spec["type"] in INPUT_TYPES, entry["key"]
        if spec["type"] == "boolean":
            assert {"trueValue", "falseValue"} <= set(spec)
        for option in spec.get("options", []):
            assert set(option) == {"label", "value"}


def test_input_defaults_are_the_worker_defaults(hub):
    env = {e["key"]: _env_value(e["input"], e["input"]["default"]) for e in hub["config"]["env"]}
    assert WorkerConfig.from_env(env) == WorkerConfig()


def test_options_and_number_bounds_agree_with_the_worker_validation(hub):
    for entry in hub["config"]["env"]:
        key, spec = entry["key"], entry["input"]
        for option in spec.get("options", []):
            WorkerConfig.from_env({key: option["value"]})
        if "min" in spec:
            WorkerConfig.from_env({key: str(spec["min"])})
            with pytest.raises(ConfigError):
                WorkerConfig.from_env({key: str(spec["min"] - 1)})
        if "max" in spec:
            WorkerConfig.from_env({key: str(spec["max"])})
            with pytest.raises(ConfigError):
                WorkerConfig.from_env({key: str(spec["max"] + 1)})


def test_presets_name_known_variables_and_make_valid_configs(hub):
    specs = {e["key"]: e["input"] for e in hub["config"]["env"]}
    for preset in hub["config"]["presets"]:
        assert set(preset["defaults"]) <= set(specs), preset["name"]
        WorkerConfig.from_env({k: _env_value(specs[k], v) for k, v in preset["defaults"].items()})


def test_the_hub_finds_a_handler_py_that_is_the_generated_handler(root):
    spec = importlib.util.spec_from_file_location("hub_handler", root / ".runpod" / "handler.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from exported.handler import handler

    assert module.handler is handler
    assert (root / "Dockerfile").is_file() and (root / "README.md").is_file()


# -- tests.json -------------------------------------------------------------------------
def test_tests_json_is_in_the_hub_format(hub, cases):
    names = [case["name"] for case in cases["tests"]]
    assert len(names) == len(set(names)) and len(names) >= 3
    for case in cases["tests"]:
        assert set(case) <= {"name", "input", "timeout"} and isinstance(case["input"], dict)
        assert isinstance(case["timeout"], int) and 1000 <= case["timeout"] <= 300_000, case["name"]
    config = cases["config"]
    assert config["gpuTypeId"] and config["gpuCount"] >= 1
    assert config["allowedCudaVersions"] == hub["config"]["allowedCudaVersions"]
    assert all(set(e) == {"key", "value"} and e["key"] in ENV_VARS.values() for e in config.get("env", []))


def _pixels(b64: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def test_the_predict_cases_carry_the_digits_they_claim(root, cases):
    by_name = {case["name"]: case["input"] for case in cases["tests"]}
    six = json.loads((root / "test_input.json").read_text())["input"]["images"]
    assert np.array_equal(_pixels(by_name["predict_base_digit"]["images"]), _pixels(six))
    image, _ = digit("inverted", ADAPTER_EXAMPLES[1])
    assert np.array_equal(_pixels(by_name["predict_inverted_with_adapter"]["images"]), _pixels(image))


@pytest.fixture(scope="module")
def api(root, models_dir, cases, tmp_path_factory):
    from fastbackend.local import serve_api

    env = {e["key"]: e["value"] for e in cases["config"].get("env", [])}
    env.update(FASTBACKEND_BASE_MODEL=str(models_dir / "base"), FASTBACKEND_ADAPTERS_DIR=str(models_dir / "adapters"))
    started = time.perf_counter()
    with serve_api(root, env=env, log_file=tmp_path_factory.mktemp("hub") / "api.log") as server:
        yield server, time.perf_counter() - started


def test_every_case_completes_through_the_local_api_within_its_timeout(api, cases):
    """Each case within its timeout; the first one also with the worker's cold start counted,
    as on a freshly scaled-up endpoint."""
    api, startup_s = api
    expected = {
        "predict_base_digit": "6",
        "predict_inverted_with_adapter": str(digit("inverted", ADAPTER_EXAMPLES[1])[1]),
    }
    for case in cases["tests"]:
        started = time.perf_counter()
        answer = api.runsync({"input": case["input"]})
        took_ms = (time.perf_counter() - started) * 1000 + (startup_s * 1000 if case is cases["tests"][0] else 0)
        assert answer["status"] == "COMPLETED" and "error" not in answer, (case["name"], answer)
        assert answer["output"]["status"] == "success", case["name"]
        assert took_ms < case["timeout"], f"{case['name']}: {took_ms:.0f} ms > {case['timeout']} ms"
        if case["name"] in expected:
            assert answer["output"]["predictions"][0]["label"] == expected[case["name"]], case["name"]
        print(
            f"{case['name']}: {took_ms:.0f} ms (timeout {case['timeout']} ms)"
            + (" including the worker's startup" if case is cases["tests"][0] else "")
        )
