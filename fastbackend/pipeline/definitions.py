"""Pipeline definitions: `pipelines.yaml`, an ordered list of notebooks per named pipeline.

    pipelines:
      evaluate:
        description: preprocess + inference of one adapter
        parameters: {adapter: inverted}          # to every step that declares the name
        rank_by: accuracy                        # optional: a sweep's points, best first
        steps:
          - notebook: notebooks/01_preprocess.ipynb
          - name: inference                      # default: the notebook's stem without "NN_"
            notebook: notebooks/02_inference.ipynb
            parameters: {top_k_shown: 5}         # to this step only

Notebook paths are relative to the file's folder, which is also the working directory of the
kernels and the parent of `runs/`.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fastbackend.pipeline.errors import DefinitionError

DEFAULT_FILE = "pipelines.yaml"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_PIPELINE_KEYS = {"description", "parameters", "steps", "rank_by"}
_STEP_KEYS = {"name", "notebook", "parameters"}


@dataclass(frozen=True)
class Step:
    """One notebook of a pipeline and the parameters the pipeline sets for it alone."""

    name: str
    notebook: str  # as written in the file, relative to its folder
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Pipeline:
    """A named, ordered list of steps and the parameters it sets for all of them."""

    name: str
    steps: tuple[Step, ...]
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    rank_by: str = ""  # a recorded metric: a sweep's points are listed best (highest) first

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError(f"pipeline {self.name!r} has no steps")


@dataclass(frozen=True)
class Definitions:
    """Every pipeline of one definitions file; `root` is the file's folder."""

    path: Path
    pipelines: dict[str, Pipeline]

    @property
    def root(self) -> Path:
        return self.path.parent

    def get(self, name: str) -> Pipeline:
        """The named pipeline; raises DefinitionError naming the known ones."""
        if name not in self.pipelines:
            close = difflib.get_close_matches(name, list(self.pipelines), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise DefinitionError(str(self.path), f"no pipeline {name!r} (known: {', '.join(self.pipelines)}){hint}")
        return self.pipelines[name]


def step_name(notebook: str) -> str:
    """`notebooks/01_preprocess.ipynb` -> `preprocess`."""
    return re.sub(r"^\d+[_-]", "", Path(notebook).stem)


def _mapping(value: Any, where: str, source: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise DefinitionError(source, f"{where}: expected a mapping of names to values")
    return dict(value)


def _step(raw: Any, where: str, source: str) -> Step:
    if isinstance(raw, str):  # shorthand: a bare notebook path
        raw = {"notebook": raw}
    if not isinstance(raw, dict) or not isinstance(raw.get("notebook"), str):
        raise DefinitionError(source, f"{where}: a step needs `notebook: <path>`")
    unknown = set(raw) - _STEP_KEYS
    if unknown:
        raise DefinitionError(source, f"{where}: unknown key(s) {sorted(unknown)}; a step has {sorted(_STEP_KEYS)}")
    name = str(raw.get("name") or step_name(raw["notebook"]))
    if not NAME_PATTERN.fullmatch(name):
        raise DefinitionError(source, f"{where}: step name {name!r} must match {NAME_PATTERN.pattern}")
    return Step(name, raw["notebook"], _mapping(raw.get("parameters"), f"{where}.parameters", source))


def _pipeline(name: str, raw: Any, source: str) -> Pipeline:
    where = f"pipelines.{name}"
    if not NAME_PATTERN.fullmatch(name):
        raise DefinitionError(source, f"{where}: a pipeline name must match {NAME_PATTERN.pattern}")
    if not isinstance(raw, dict):
        raise DefinitionError(source, f"{where}: expected a mapping with `steps`")
    unknown = set(raw) - _PIPELINE_KEYS
    if unknown:
        raise DefinitionError(
            source, f"{where}: unknown key(s) {sorted(unknown)}; a pipeline has {sorted(_PIPELINE_KEYS)}"
        )
    if not isinstance(raw.get("steps"), list) or not raw["steps"]:
        raise DefinitionError(source, f"{where}.steps: expected a non-empty list of notebooks")
    steps = tuple(_step(s, f"{where}.steps[{i}]", source) for i, s in enumerate(raw["steps"]))
    names = [s.name for s in steps]
    if len(set(names)) != len(names):
        raise DefinitionError(source, f"{where}: step names {names} repeat; give the steps distinct `name:`s")
    if not isinstance(raw.get("rank_by", ""), str):
        raise DefinitionError(source, f"{where}.rank_by: expected the name of a recorded metric")
    return Pipeline(
        name,
        steps,
        str(raw.get("description") or ""),
        _mapping(raw.get("parameters"), f"{where}.parameters", source),
        str(raw.get("rank_by") or ""),
    )


def load_definitions(path: Path) -> Definitions:
    """Read and check a pipelines file (its structure; notebooks are checked when planning).

    Args:
        path: the YAML file, e.g. `pipelines.yaml` at the repository root.

    Returns:
        The Definitions, pipelines in file order.

    Raises:
        DefinitionError: the file is missing, is not YAML, or does not have the shape above.
    """
    path = Path(path).resolve()
    source = str(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise DefinitionError(source, f"cannot read ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise DefinitionError(source, f"not valid YAML ({exc})") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("pipelines"), dict) or not raw["pipelines"]:
        raise DefinitionError(source, "expected a top-level `pipelines:` mapping of names to pipelines")
    return Definitions(path, {str(n): _pipeline(str(n), p, source) for n, p in raw["pipelines"].items()})
