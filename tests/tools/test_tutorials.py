"""The tutorials' command sequences run as written. A shell block preceded by
`<!-- tutorial: run -->` runs in `make test`, one preceded by `<!-- tutorial: full -->` in
`make test-full` (`, exits N` when the block's last command is meant to fail with status N); an
`<!-- expect: TEXT -->` line after the block names text its output must hold.

Each block runs with bash in a sandbox: a folder holding links to the repository's files (and a
copy of `exported/`), with `models/` the demo models the tests build (never the repository's own
`models/`), so a tutorial's default paths work and nothing is written into tracked files."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_BLOCK = re.compile(
    r"<!-- tutorial: (run|full)(?:, exits (\d+))? -->\n```(?:bash|sh)\n(.*?)\n```\n(?:<!-- expect: (.*?) -->)?", re.S
)
_LEFT_OUT = {".git", "models", "runs", "data", "site", "test-artifacts", "bench-results"}  # a tutorial may write these


def tutorial_blocks() -> list[pytest.param]:
    params = []
    for page in sorted((ROOT / "docs" / "tutorials").glob("*.md")):
        for n, match in enumerate(_BLOCK.finditer(page.read_text())):
            kind, status, script, expect = match.groups()
            marks = [pytest.mark.full] if kind == "full" else []
            params.append(
                pytest.param(script, int(status or 0), expect, id=f"{page.stem}-{n}", marks=marks),
            )
    return params


BLOCKS = tutorial_blocks()


def test_the_tutorials_have_blocks_that_run_in_make_test():
    assert sum(not p.marks for p in BLOCKS) >= 3


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, models_dir) -> Path:
    folder = tmp_path_factory.mktemp("tutorial")
    for entry in ROOT.iterdir():
        if entry.name not in {*_LEFT_OUT, "exported"}:
            (folder / entry.name).symlink_to(entry)
    # A copy, not a link: the local runners resolve the handler's path and run it from its project root.
    shutil.copytree(ROOT / "exported", folder / "exported", ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "models").symlink_to(models_dir)
    return folder


@pytest.mark.parametrize("script, status, expect", BLOCKS)
def test_a_tutorial_block_runs_as_written(sandbox, script, status, expect):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTBACKEND_")}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=sandbox,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == status, f"exit {done.returncode}, expected {status}:\n{script}\n{output[-3000:]}"
    if expect:
        assert expect in output, f"{expect!r} not in the output of:\n{script}\n{output[-3000:]}"
