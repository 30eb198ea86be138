"""The own-data tutorial's commands are ones that work: each pipeline command parses, and its
parameters are known to the pipeline's notebooks with the right types (planned, not run)."""

from __future__ import annotations

import shlex

from fastbackend.cli import build_parser
from fastbackend.pipeline.definitions import load_definitions
from fastbackend.pipeline.plan import parse_assignment, plan_runs


def test_every_pipeline_command_of_your_own_data_plans(root, tmp_path):
    section = (root / "docs" / "tutorials" / "own-data.md").read_text().replace("\\\n", " ")
    commands = [line.split("#")[0] for line in section.splitlines() if ".venv/bin/fastbackend pipeline run" in line]
    assert {shlex.split(c)[3] for c in commands} == {"evaluate", "train"}
    definitions = load_definitions(root / "pipelines.yaml")
    for n, command in enumerate(commands):
        args = build_parser().parse_args(shlex.split(command)[1:])
        plans = plan_runs(definitions, args.name, [parse_assignment(a) for a in args.param], tmp_path / str(n))
        assert plans, command
