"""Typed notebook parameters: what a notebook declares, and whether a value fits it.

papermill injects whatever it is given (its issues #55 and #245): an unknown name only logs a
warning and a wrong type fails, if at all, deep inside the notebook. Here each notebook's
`parameters` cell is read with papermill's own `inspect_notebook`; a parameter's type is its
annotation (`seed: int = 0`) or else the type of its literal default, and values are checked
against it before any kernel starts.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fastbackend.pipeline.errors import DefinitionError

PARAMETERS_TAG = "parameters"
KINDS = ("int", "float", "bool", "str", "list", "dict", "any")
_ANNOTATIONS = {
    "int": "int",
    "float": "float",
    "bool": "bool",
    "str": "str",
    "list": "list",
    "List": "list",
    "tuple": "list",
    "dict": "dict",
    "Dict": "dict",
}
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_INT = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class ParamType:
    """A parameter's type: one of KINDS, the item type of a list, and whether None is allowed."""

    kind: str
    item: str | None = None
    optional: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS or (self.item is not None and self.item not in KINDS):
            raise ValueError(f"unknown parameter type {self.kind}[{self.item}]")

    def __str__(self) -> str:
        name = f"{self.kind}[{self.item}]" if self.item else self.kind
        return f"{name} | None" if self.optional else name


ANY = ParamType("any")


@dataclass(frozen=True)
class NotebookParameter:
    """One assignment of a notebook's parameters cell."""

    name: str
    type: ParamType
    default: Any  # the literal value, or None when the default is not a literal
    default_source: str  # the default as written in the notebook
    help: str = ""
    literal: bool = True  # False: the default is an expression (`Path.home()`), shown as written


class ValueRejected(ValueError):
    """A value does not fit a parameter's type; the message says what was expected."""


def _kind_of(value: Any) -> str:
    # bool before int: True is an int to Python, but not to a user typing `n_examples=true`.
    for kind, types in (
        ("bool", bool),
        ("int", int),
        ("float", float),
        ("str", str),
        ("list", (list, tuple)),
        ("dict", dict),
    ):
        if isinstance(value, types):
            return kind
    return "any"


def type_from_default(value: Any) -> ParamType:
    """The type a literal default declares; a homogeneous non-empty list also fixes its items."""
    if value is None:
        return ANY
    kind = _kind_of(value)
    if kind == "list" and value:
        items = {_kind_of(v) for v in value}
        if len(items) == 1 and items <= {"int", "float", "bool", "str"}:
            return ParamType("list", items.pop())
    return ParamType(kind)


def type_from_annotation(annotation: str, default: Any) -> ParamType:
    """`int`, `list[str]`, `Optional[float]`... -> ParamType; what is not understood -> any."""
    text = annotation.replace(" ", "")
    optional = default is None
    match = re.fullmatch(r"Optional\[(.+)\]", text)
    if match:
        text, optional = match.group(1), True
    match = re.fullmatch(r"(\w+)(?:\[(\w+)(?:,\.\.\.)?\])?", text)
    if not match or match.group(1) not in _ANNOTATIONS:
        return ANY
    kind = _ANNOTATIONS[match.group(1)]
    item = _ANNOTATIONS.get(match.group(2) or "") if kind == "list" else None
    return ParamType(kind, item if item in ("int", "float", "bool", "str") else None, optional)


def inspect_parameters(notebook: Path, shown_as: str) -> tuple[NotebookParameter, ...]:
    """The declared parameters of a notebook, read with papermill's `inspect_notebook`.

    Args:
        notebook: path of the .ipynb file.
        shown_as: how messages name the notebook (e.g. as written in pipelines.yaml).

    Returns:
        The parameters in the order the cell assigns them.

    Raises:
        DefinitionError: the notebook is missing or unreadable, or it has no cell tagged
            `parameters` or more than one (papermill would then inject parameters at the top,
            where the notebook's own assignments silently override them, or after the first).
    """
    import nbformat
    from papermill import inspect_notebook

    if not notebook.is_file():
        raise DefinitionError(shown_as, "notebook not found")
    try:
        nb = nbformat.read(notebook, as_version=4)
    except Exception as exc:  # nbformat raises several unrelated types for a broken file
        raise DefinitionError(shown_as, f"unreadable notebook ({type(exc).__name__}: {exc})") from exc
    tagged = [i for i, c in enumerate(nb.cells) if PARAMETERS_TAG in c.metadata.get("tags", [])]
    if len(tagged) != 1:
        found = "no cell" if not tagged else f"{len(tagged)} cells (indices {tagged})"
        raise DefinitionError(
            shown_as,
            f"a pipeline notebook needs exactly one cell tagged {PARAMETERS_TAG!r}, found {found}; "
            "tag the cell that assigns the defaults (JupyterLab: property inspector -> add tag)",
        )
    if nb.cells[tagged[0]].cell_type != "code":
        raise DefinitionError(shown_as, f"the cell tagged {PARAMETERS_TAG!r} (index {tagged[0]}) is not a code cell")
    found = []
    for name, info in inspect_notebook(str(notebook)).items():
        source = info["default"]
        try:
            default = ast.literal_eval(source)
            literal = True
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            default, literal = None, False
        annotation = info["inferred_type_name"]
        if annotation and annotation != "None":
            ptype = type_from_annotation(annotation, default)
        else:
            ptype = type_from_default(default) if literal else ANY
        found.append(NotebookParameter(name, ptype, default, source, info.get("help", ""), literal))
    return tuple(found)


def split_top_level(text: str) -> list[str]:
    """Split CLI text at commas outside brackets and quotes: `0,1,[a,b]` -> ['0', '1', '[a,b]']."""
    parts, depth, quote, start = [], 0, "", 0
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return str(yaml.safe_load(text))
    return text


def _yaml(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueRejected(f"cannot read {text!r} ({str(exc).splitlines()[0]})") from exc


def parse_text(text: str, ptype: ParamType) -> Any:
    """A command-line value (always text) read as the declared type; raises ValueRejected."""
    if ptype.optional and text in ("None", "null", "~"):
        return None
    kind = ptype.kind
    if kind == "str":
        return _unquote(text)
    if kind == "int":
        if not _INT.fullmatch(text):
            raise ValueRejected(f"expected {ptype}, got {text!r}")
        return int(text)
    if kind == "float":
        try:
            return float(text)
        except ValueError:
            raise ValueRejected(f"expected {ptype}, got {text!r}") from None
    if kind == "bool":
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise ValueRejected(f"expected {ptype} (true/false), got {text!r}")
    if kind == "list":
        # `a,b` and `[a,b]` both mean the list ['a', 'b']; items are read by the item type, so
        # `1,2` is ['1', '2'] for a list[str] and [1, 2] for a list[int].
        inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
        if not inner.strip():
            return []
        item = ParamType(ptype.item or "any")
        try:
            return [parse_text(piece, item) for piece in split_top_level(inner)]
        except ValueRejected:
            raise ValueRejected(f"expected {ptype}, got {text!r}") from None
    value = _yaml(text) if text else ""
    return check_value(value, ptype)


def check_value(value: Any, ptype: ParamType) -> Any:
    """A typed value (from YAML) checked against the declared type; int widens to float."""
    if value is None and (ptype.optional or ptype.kind == "any"):
        return None
    kind = _kind_of(value)
    if ptype.kind == "any":
        return value
    if ptype.kind == "float" and kind == "int":
        return float(value)
    if kind != ptype.kind:
        raise ValueRejected(f"expected {ptype}, got {kind if kind != 'any' else type(value).__name__} {value!r}")
    if ptype.kind == "list":
        value = list(value)
        for item in value:
            if ptype.item and _kind_of(item) != ptype.item and not (ptype.item == "float" and _kind_of(item) == "int"):
                raise ValueRejected(f"expected {ptype}, got an item {item!r} of type {_kind_of(item)}")
    return value


def is_list_like(ptype: ParamType) -> bool:
    """Whether a list given for this parameter is its value (True) rather than a sweep."""
    return ptype.kind == "list"
