"""Each fact once: the places that cannot import the runtime's definition repeat it exactly."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from worker.environment import QUIET_ENV, quiet_environment

ROOT = Path(__file__).resolve().parents[2]


def makefile_env() -> dict[str, str]:
    text = (ROOT / "Makefile").read_text()
    return dict(re.findall(r"^export (\w+) := (\S+)$", text, flags=re.M))


def dockerfile_env() -> dict[str, str]:
    """The runtime stage's `ENV` instruction that carries the quiet variables."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    blocks = [dict(re.findall(r"(\w+)=(\S+)", line)) for line in re.findall(r"^ENV (.*)$", text, flags=re.M)]
    block = next(b for b in blocks if "HF_HUB_OFFLINE" in b)
    return {k: v for k, v in block.items() if k != "PYTHONUNBUFFERED"}


def pod_setup_kernel_env() -> dict[str, str]:
    text = (ROOT / "scripts" / "pod-setup.sh").read_text()
    return ast.literal_eval(re.search(r'^spec\["env"\] = (\{.*\})$', text, flags=re.M).group(1))


def test_quiet_variables_are_the_same_in_makefile_dockerfile_and_pod_setup():
    assert makefile_env() == QUIET_ENV
    assert dockerfile_env() == QUIET_ENV
    assert pod_setup_kernel_env() == QUIET_ENV


def test_local_worker_environment_is_quiet():
    from fastbackend.local import handler_env

    env = handler_env()
    assert {k: env[k] for k in QUIET_ENV} == QUIET_ENV


def test_quiet_environment_keeps_an_explicit_value():
    env = {"HF_HUB_OFFLINE": "0"}
    quiet_environment(env)
    assert env == {**QUIET_ENV, "HF_HUB_OFFLINE": "0"}
