"""A worker that cannot serve exits non-zero with one clear line, before taking any job."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from fastbackend.local import handler_env, run_test_input


def start_worker(root, env, timeout=120):
    return run_test_input({"input": {"op": "ping"}}, root, env, timeout)


def failure_line(done) -> str:
    lines = [line for line in done.log.splitlines() if line.startswith("fastbackend: setup failed")]
    assert len(lines) == 1, done.log[-2000:]
    return lines[0]


def test_missing_model_folder(root, tmp_path):
    done = start_worker(root, {"FASTBACKEND_BASE_MODEL": str(tmp_path / "gone")})
    assert done.returncode == 1
    assert f"{tmp_path / 'gone' / 'config.json'}: missing" in failure_line(done)
    assert "Job result" not in done.log


def test_corrupt_base_weights(root, models_dir, tmp_path):
    base = shutil.copytree(models_dir / "base", tmp_path / "base")
    (base / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    done = start_worker(root, {"FASTBACKEND_BASE_MODEL": str(base), "FASTBACKEND_ADAPTERS_DIR": str(tmp_path / "none")})
    assert done.returncode == 1 and "model.safetensors" in failure_line(done)


def test_preloaded_adapter_for_another_base(root, models_dir, tmp_path):
    adapters = shutil.copytree(models_dir / "adapters", tmp_path / "adapters")
    meta = adapters / "rot90" / "fastbackend.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "base_fingerprint": "feedfacefeedface"}))
    # Named in FASTBACKEND_PRELOAD_ADAPTERS, it stops setup (with `*` it would be refused and listed).
    base, preload = str(models_dir / "base"), "rot90"
    env = {
        "FASTBACKEND_BASE_MODEL": base,
        "FASTBACKEND_ADAPTERS_DIR": str(adapters),
        "FASTBACKEND_PRELOAD_ADAPTERS": preload,
    }
    done = start_worker(root, env)
    assert (
        done.returncode == 1 and "ADAPTER_INCOMPATIBLE" in failure_line(done) and "another base" in failure_line(done)
    )


def test_unreadable_adapters_folder(root, models_dir, tmp_path):
    # A file where the folder should be: unreadable as a folder even for root (which ignores chmod).
    adapters = tmp_path / "adapters"
    adapters.write_text("not a folder")
    # Adapters asked for by name: setup stops in one line naming the folder that is not one (with
    # the default `*` it is one warning line).
    base = str(models_dir / "base")
    env = {
        "FASTBACKEND_BASE_MODEL": base,
        "FASTBACKEND_ADAPTERS_DIR": str(adapters),
        "FASTBACKEND_PRELOAD_ADAPTERS": "inverted",
    }
    done = start_worker(root, env)
    line = failure_line(done)
    assert done.returncode == 1 and "MODEL_LOAD_FAILED" in line and f"{adapters}: unreadable" in line, line


def test_invalid_config_names_the_variable(root, models_dir):
    # The same line for every variable (FASTBACKEND_DEVICE=banana: tests/unit/test_device_setting.py).
    done = start_worker(root, {"FASTBACKEND_MAX_BATCH": "lots"})
    assert done.returncode == 1 and "FASTBACKEND_MAX_BATCH='lots'" in failure_line(done)


def test_a_device_this_machine_lacks(root, models_dir):
    import torch

    # One index past the GPUs here: cuda:0 on a machine without any, cuda:N on one with N.
    absent = f"cuda:{torch.cuda.device_count() if torch.cuda.is_available() else 0}"
    done = start_worker(root, {"FASTBACKEND_DEVICE": absent, "FASTBACKEND_BASE_MODEL": str(models_dir / "base")})
    line = failure_line(done)
    assert done.returncode == 1 and f"FASTBACKEND_DEVICE='{absent}'" in line and "CUDA GPU" in line
    assert "Traceback" not in done.log


def test_a_processor_field_the_reference_refuses(root, models_dir, tmp_path):
    # size with only longest_edge: AutoImageProcessor itself refuses it for these processors.
    base = shutil.copytree(models_dir / "base", tmp_path / "base")
    processor = base / "preprocessor_config.json"
    processor.write_text(json.dumps({**json.loads(processor.read_text()), "size": {"longest_edge": 32}}))
    done = start_worker(root, {"FASTBACKEND_BASE_MODEL": str(base), "FASTBACKEND_ADAPTERS_DIR": str(tmp_path / "none")})
    line = failure_line(done)
    assert done.returncode == 1 and f"MODEL_LOAD_FAILED: {processor}: size=" in line and "longest_edge" in line
    assert "Traceback" not in done.log


OOM_SCRIPT = r"""
import base64, io, json, resource, sys
import numpy as np
from PIL import Image
import exported.handler as h
from worker.config import WorkerConfig
h.WORKER.setup(WorkerConfig(base_model=sys.argv[1], adapters_dir=sys.argv[2]))
buffer = io.BytesIO()
Image.fromarray(np.zeros((4096, 4096, 4), np.uint8)).save(buffer, format="PNG")
huge = base64.b64encode(buffer.getvalue()).decode()
small = json.loads(open("test_input.json").read())
with open("/proc/self/status") as f:
    vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize"))
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
resource.setrlimit(resource.RLIMIT_AS, (vm + 24 * 2**20, hard))  # a real allocation failure
failed = h.handler({"id": "oom", "input": {"images": huge}})
resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
after = h.handler({"id": "after", **small})
print("RESULT " + json.dumps({"failed": failed, "after": after}))
"""


def test_out_of_memory_answers_the_job_and_asks_for_a_new_worker(root, models_dir):
    done = subprocess.run(
        [sys.executable, "-c", OOM_SCRIPT, str(models_dir / "base"), str(models_dir / "adapters")],
        cwd=root,
        env=handler_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    assert result["failed"]["code"] == "OUT_OF_MEMORY" and result["failed"]["refresh_worker"] is True
    assert result["failed"]["error"].startswith("OUT_OF_MEMORY: ")
    assert result["after"]["predictions"][0]["label"] == "6"
