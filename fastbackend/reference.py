"""`fastbackend reference`: the reference pages and files generated from the code, and their check.

One description per fact, kept beside the code that enforces it:
- a setting's in `worker/config.py` (`setting(default, description, ...)` on `WorkerConfig`):
  docs/reference/configuration.md and the `env` list of .runpod/hub.json;
- an error code's in `worker/errors.py` (`NAME = "NAME", "meaning"` on `ErrorCode`): docs/reference/errors.md;
- a request field's in `worker/schema.py` (pydantic `Field(description=...)`): docs/reference/requests.md
  and schema/input.json;
- a command's and a flag's in the CLI's parser (`help=`): docs/reference/cli.md.

`fastbackend reference` writes them all; `fastbackend reference --check` (run by `make test`) names each
stale file. A missing description is an error naming the file where it belongs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

from worker.config import ENV_PREFIX, ENV_VARS, WorkerConfig, describe
from worker.errors import FATAL_CODES, ErrorCode

COMMAND = "fastbackend reference"
CONFIG_PAGE = "docs/reference/configuration.md"
ERRORS_PAGE = "docs/reference/errors.md"
REQUESTS_PAGE = "docs/reference/requests.md"
CLI_PAGE = "docs/reference/cli.md"
HUB_JSON = ".runpod/hub.json"
SCHEMA_JSON = "schema/input.json"


class ReferenceError(Exception):
    """A fact the reference needs is missing from the code; the message names the file to edit."""


def _stamp(source: str) -> str:
    return f"<!-- Generated from {source} by `{COMMAND}`: edit the source, then run `{COMMAND}`. -->\n"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# -- configuration --------------------------------------------------------------------------------------
_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "tuple[str, ...]": "comma list"}


def env_value(default: Any) -> str:
    """A default as it is written in the environment (`FASTBACKEND_X=...`)."""
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, tuple):
        return ",".join(default)
    return str(default)


def _settings(config_cls: type = WorkerConfig) -> list[tuple[str, Any, Any]]:
    found = []
    for f in fields(config_cls):
        spec = describe(f)
        if not spec.doc.strip():
            raise ReferenceError(
                f"worker/config.py: {config_cls.__name__}.{f.name} has no description; declare it as "
                f'`{f.name}: {f.type} = setting(default, "what it does")`, then run `{COMMAND}` '
                f"(it regenerates {CONFIG_PAGE} and {HUB_JSON})"
            )
        found.append((f, spec, f.default))
    return found


def configuration_page(config_cls: type = WorkerConfig) -> str:
    rows = []
    for f, spec, default in _settings(config_cls):
        value = env_value(default)
        bounds = [f"one of {', '.join(f'`{c}`' for c in spec.choices)}"] if spec.choices else []
        bounds += [f">= {spec.minimum}"] if spec.minimum is not None else []
        bounds += [f"<= {spec.maximum}"] if spec.maximum is not None else []
        rows.append(
            (
                f"`{ENV_PREFIX}{f.name.upper()}`",
                _TYPES.get(f.type, f.type),
                f"`{value}`" if value else "(empty)",
                spec.doc + (f" ({'; '.join(bounds)})" if bounds else ""),
            )
        )
    return (
        _stamp("worker/config.py (WorkerConfig)")
        + "# Configuration\n\n"
        + "Every setting is an environment variable, read once at setup by `WorkerConfig.from_env` "
        + "(`worker/config.py`). An invalid value stops setup with one line naming the variable. "
        + "Booleans take `true`/`false` (also `1`/`0`, `yes`/`no`); comma lists are comma-separated.\n\n"
        + _table(("variable", "type", "default", "what it does"), rows)
    )


def hub_env(config_cls: type = WorkerConfig) -> list[dict[str, Any]]:
    """The `config.env` list of .runpod/hub.json: one Hub form input per setting."""
    entries = []
    for f, spec, default in _settings(config_cls):
        kind = {"int": "number", "float": "number", "bool": "boolean"}.get(f.type, "string")
        entry: dict[str, Any] = {
            "name": spec.label or f.name.replace("_", " ").capitalize(),
            "type": kind,
            "description": spec.doc,
        }
        if kind == "boolean":
            entry |= {"trueValue": "true", "falseValue": "false"}
        if spec.choices:
            entry["options"] = [{"label": c, "value": c} for c in spec.choices]
        if spec.minimum is not None:
            entry["min"] = spec.minimum
        if spec.maximum is not None:
            entry["max"] = spec.maximum
        entry["default"] = default if kind != "string" else env_value(default)
        entry["advanced"] = spec.advanced
        entries.append({"key": ENV_VARS.get(f.name, f"{ENV_PREFIX}{f.name.upper()}"), "input": entry})
    return entries


def hub_json(current: str, config_cls: type = WorkerConfig) -> str:
    """.runpod/hub.json with its `env` list regenerated; everything else kept as written."""
    hub = json.loads(current)
    hub["config"]["env"] = hub_env(config_cls)
    return json.dumps(hub, indent=2, ensure_ascii=False) + "\n"


# -- error codes ---------------------------------------------------------------------------------------
def errors_page(codes: Iterable[ErrorCode] = ErrorCode, fatal: Iterable[ErrorCode] = FATAL_CODES) -> str:
    fatal = set(fatal)
    rows = []
    for code in codes:
        if not code.meaning.strip():
            raise ReferenceError(
                f'worker/errors.py: ErrorCode.{code.name} has no meaning; write it as `{code.name} = "{code.value}", '
                f'"what it means"`, then run `{COMMAND}` (it regenerates {ERRORS_PAGE})'
            )
        rows.append((f"`{code.value}`", code.meaning, "yes" if code in fatal else "no"))
    return (
        _stamp("worker/errors.py (ErrorCode, FATAL_CODES)")
        + "# Error codes\n\n"
        + 'Every failure is answered in one shape: `{"status": "error", "error": "CODE: message", '
        + '"code", "message", "field"?, "job_id", "timestamp"}`. `error` is a string, so RunPod marks the '
        + "job FAILED. Codes are stable: clients match on them. *Recycles* says whether the answer carries "
        + "`refresh_worker: true`, so that RunPod replaces the worker after this job (passing "
        + "`FASTBACKEND_RSS_CEILING_MB` adds it to any answer).\n\n"
        + _table(("code", "meaning", "recycles the worker"), rows)
    )


# -- request fields ------------------------------------------------------------------------------------
def _json_type(prop: Mapping[str, Any]) -> str:
    if "const" in prop:
        return json.dumps(prop["const"])
    if "$ref" in prop:
        return prop["$ref"].rsplit("/", 1)[-1]
    for key in ("anyOf", "oneOf"):
        if key in prop:
            return " or ".join(dict.fromkeys(_json_type(p) for p in prop[key]))
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {_json_type(prop.get('items', {}))}"
    limits = [f"{k} {prop[k]}" for k in ("minimum", "maximum", "minLength", "maxLength") if k in prop]
    return kind + (f" ({', '.join(limits)})" if limits else "")


def requests_page(requests: Iterable[type] | None = None) -> str:
    from worker.schema import DEFAULT_OP, REQUESTS
    from worker.tasks import TASKS

    # `predict` once per task (worker/tasks: each task's request), then the task-neutral ops, then
    # the `embed` requests of the tasks that extend it (zero-shot's texts).
    tasks = {task.request: name for name, task in TASKS.items()}
    own_embed = {t.embed_request: n for n, t in TASKS.items() if t.embed_request is not REQUESTS[1]}
    tasks.update(own_embed)
    requests = requests if requests is not None else (*(t.request for t in TASKS.values()), *REQUESTS[1:], *own_embed)
    parts = []
    for model in requests:
        schema = model.model_json_schema()
        op = schema["properties"]["op"]["const"] if "const" in schema["properties"]["op"] else DEFAULT_OP
        required = set(schema.get("required", []))
        rows = []
        for name, prop in schema["properties"].items():
            if name == "op":
                continue
            description = model.model_fields[name].description
            if not description:
                raise ReferenceError(
                    f"worker/schema.py: {model.__name__}.{name} has no description; add "
                    f'`Field(..., description="...")`, then run `{COMMAND}` (it regenerates {REQUESTS_PAGE})'
                )
            default = "required" if name in required else f"`{json.dumps(prop.get('default'))}`"
            rows.append((f"`{name}`", _json_type(prop), default, description))
        doc = (model.__doc__ or "").strip()
        if not doc or doc.startswith("!!!"):
            raise ReferenceError(f"worker/schema.py: {model.__name__} has no docstring saying what `{op}` does")
        served = f", task {tasks[model]}" if model in tasks else ""
        shown = f" (the default op{served})" if op == DEFAULT_OP else (f" ({served[2:]})" if served else "")
        head = f"## `{op}`{shown}\n\n{doc}\n\n"
        parts.append(head + (_table(("field", "type", "default", "what it does"), rows) if rows else "No fields.\n"))
    return (
        _stamp("worker/schema.py (the request models)")
        + "# Request fields\n\n"
        + '`job["input"]` is one of these objects, chosen by `op`. Unknown keys are refused with '
        + "`INVALID_INPUT` naming the key; every error names the field at fault. The same models publish "
        + f"the JSON Schema in `{SCHEMA_JSON}`.\n\n"
        + "\n".join(parts)
    )


def schema_json() -> str:
    from worker.schema import json_schema
    from worker.tasks import DEFAULT_TASK, TASKS

    return json.dumps(json_schema(TASKS[DEFAULT_TASK].request), indent=2, sort_keys=True) + "\n"


# -- the CLI -------------------------------------------------------------------------------------------
@contextmanager
def _environment_without_settings():
    """Parser defaults read from FASTBACKEND_* (adapters stamp --base-model) as on a clean machine."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith(ENV_PREFIX)}
    try:
        yield
    finally:
        os.environ.update(saved)


def _default(action: argparse.Action) -> str:
    if action.required or action.default in (None, False, [], argparse.SUPPRESS) or action.nargs == 0:
        return ""
    if action.default == sys.executable:
        return "the running Python"
    return f"`{action.default}`"


def _subcommands(parser: argparse.ArgumentParser, prefix: str) -> list[tuple[str, str, argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                found.append((f"{prefix} {name}", helps.get(name) or "", sub))
                found += _subcommands(sub, f"{prefix} {name}")
    return found


def cli_page(build_parser: Callable[[], argparse.ArgumentParser]) -> str:
    """The CLI's page from its parser (passed in: fastbackend.cli imports this module)."""
    with _environment_without_settings():
        parser = build_parser()
    parts = []
    for name, summary, sub in _subcommands(parser, "fastbackend"):
        rows = []
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            flag = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.dest}`"
            if not action.help:
                raise ReferenceError(
                    f"the parser of `{name}` (fastbackend/): {flag} has no help=; add one, then run `{COMMAND}` "
                    f"(it regenerates {CLI_PAGE})"
                )
            rows.append((flag, _default(action), action.help))
        text = f"## `{name}`\n\n{summary}\n\n"
        if sub.description:
            text += sub.description.strip() + "\n\n"
        text += "```\n" + sub.format_usage().replace("usage: ", "").strip() + "\n```\n\n"
        if rows:
            text += _table(("argument", "default", "what it does"), rows)
        parts.append(text)
    return (
        _stamp("the CLI's parser (fastbackend/cli.py and the commands it adds)")
        + "# The `fastbackend` command\n\n"
        + "Installed into `.venv/bin/` by `make venv`; every subcommand prints this with `--help`.\n\n"
        + "\n".join(parts)
    )


# -- all of it -----------------------------------------------------------------------------------------
def generated(root: Path, build_parser: Callable[[], argparse.ArgumentParser]) -> dict[str, str]:
    """Every generated file, relative path -> its text, as the code says it should be now."""
    return {
        CONFIG_PAGE: configuration_page(),
        ERRORS_PAGE: errors_page(),
        REQUESTS_PAGE: requests_page(),
        CLI_PAGE: cli_page(build_parser),
        HUB_JSON: hub_json((root / HUB_JSON).read_text()),
        SCHEMA_JSON: schema_json(),
    }


def stale(root: Path, expected: Mapping[str, str]) -> list[str]:
    """The files among `expected` whose text on disk differs (or that are missing)."""
    return [rel for rel, text in expected.items() if not (root / rel).is_file() or (root / rel).read_text() != text]


def command(root: Path, check: bool, build_parser: Callable[[], argparse.ArgumentParser]) -> int:
    """`fastbackend reference [--check]`. Exit 0 in sync (or written), 1 stale, 2 a description missing."""
    try:
        expected = generated(root, build_parser)
    except ReferenceError as exc:
        print(f"reference error: {exc}", file=sys.stderr)
        return 2
    if check:
        out_of_date = stale(root, expected)
        for rel in out_of_date:
            print(f"{rel} is out of date with the code: run `{COMMAND}` to regenerate it", file=sys.stderr)
        if not out_of_date:
            print(f"the reference is in sync with the code ({len(expected)} files)")
        return 1 if out_of_date else 0
    for rel, text in expected.items():
        path = root / rel
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {rel}")
    return 0
