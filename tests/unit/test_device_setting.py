"""FASTBACKEND_DEVICE: its syntax is checked with the config, its presence where the model is placed;
each failure is one ConfigError naming the variable and the value."""

from __future__ import annotations

import pytest

from worker.acceleration import resolve_device
from worker.config import ConfigError, WorkerConfig


@pytest.mark.parametrize("value", ["banana", "gpu", "cuda:", "cuda:x", "CUDA", "cpu:0:1"])
def test_a_value_that_is_no_device_is_refused_naming_the_variable(value):
    with pytest.raises(ConfigError, match=f"FASTBACKEND_DEVICE='{value}': not a torch device"):
        WorkerConfig.from_env({"FASTBACKEND_DEVICE": value})


@pytest.mark.parametrize("value", ["auto", "cpu", "cuda", "cuda:3", "mps"])
def test_device_names_parse(value):
    assert WorkerConfig.from_env({"FASTBACKEND_DEVICE": value}).device == value


def test_an_absent_gpu_is_refused_naming_the_variable():
    import torch

    # One index past the GPUs here: cuda:0 on a machine without any, cuda:N on one with N.
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    absent = f"cuda:{count}"
    with pytest.raises(ConfigError, match=f"FASTBACKEND_DEVICE='{absent}': "):
        resolve_device(absent)
    if not count:
        with pytest.raises(ConfigError, match="FASTBACKEND_DEVICE='cuda': no CUDA GPU is visible here"):
            resolve_device("cuda")


def test_mps_where_it_is_absent():
    import torch

    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    with pytest.raises(ConfigError, match="FASTBACKEND_DEVICE='mps': MPS"):
        resolve_device("mps")


def test_auto_and_cpu_resolve():
    import torch

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
