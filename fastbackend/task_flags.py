"""Command-line flags for the request fields of every served task, read from the tasks themselves.

Each task's request model (worker/tasks) and the `embed` op's options name their fields with
bounds and descriptions; one flag per field (`top_k` -> `--top-k`, `candidate_labels` ->
`--candidate-labels a b c`, `threshold` -> `--threshold 0.7`), typed from the field's JSON schema.
Only the flags given are sent: the worker applies its defaults and refuses, naming it, a field
the served task does not take (INVALID_INPUT).
"""

from __future__ import annotations

import argparse
from typing import Any

SHARED = ("images", "adapter", "op")  # every request's own fields, not a task's


def task_fields() -> dict[str, dict[str, Any]]:
    """field name -> {"schema": its JSON schema, "ops": ["<task> predict" | "embed", ...]}, in task order."""
    from worker.schema import EmbedInput
    from worker.tasks import TASKS

    fields: dict[str, dict[str, Any]] = {}
    models = [(f"{name} predict", task.request) for name, task in TASKS.items()] + [("embed", EmbedInput)]
    for where, model in models:
        properties = model.model_json_schema()["properties"]
        for name in model.model_fields:
            if name not in SHARED:
                fields.setdefault(name, {"schema": properties[name], "ops": []})["ops"].append(where)
    return fields


def _kind(schema: dict[str, Any]) -> dict[str, Any]:
    """The first non-null alternative of a field's schema (`anyOf` of a number or null ...)."""
    for option in schema.get("anyOf", [schema]):
        if option.get("type") != "null":
            return option
    return schema


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per task request field (see the module docstring), each defaulting to "not sent"."""
    group = parser.add_argument_group("task fields (sent only when given; the served task's request)")
    for name, field in task_fields().items():
        schema, kind = field["schema"], _kind(field["schema"])
        flag = "--" + name.replace("_", "-")
        where = ", ".join(field["ops"])
        text = f"{schema.get('description', name)} ({where})"
        if kind.get("type") == "boolean":
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif kind.get("type") == "array":
            group.add_argument(flag, dest=name, nargs="+", default=None, metavar="VALUE", help=text)
        else:
            cast = {"integer": int, "number": float}.get(kind.get("type"), str)
            choices = kind.get("enum")
            group.add_argument(flag, dest=name, type=cast, choices=choices, default=None, help=text)


def given_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The task fields given on the command line, as the job's input keys."""
    return {name: getattr(args, name) for name in task_fields() if getattr(args, name, None) is not None}
