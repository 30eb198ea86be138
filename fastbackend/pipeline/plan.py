"""Planning: pipeline + overrides -> one checked RunPlan per sweep point, before any kernel starts.

Where a step's parameter comes from, first match wins:
    `-p step.name=...`  >  `-p name=...`  >  (the same from `-f` files, later files first)
    >  the step's `parameters:` in pipelines.yaml  >  the pipeline's `parameters:`  >  the notebook.
An unqualified name goes to every step whose notebook declares it. In a string value, `${run_dir}`
is the run's own folder, `${pipeline}` its name and `${name}` a parameter set at pipeline level
(pipelines.yaml or an unqualified override). A value with top-level commas (`-p seed=0,1,2`) or a
list in a params file is a sweep; for a list parameter, a list of lists is (`-p 'tasks=[a],[a,b]'`).
"""

from __future__ import annotations

import difflib
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fastbackend.pipeline.definitions import NAME_PATTERN, Definitions, Pipeline, Step
from fastbackend.pipeline.errors import DefinitionError, ParameterError, Problem
from fastbackend.pipeline.params import (
    NotebookParameter,
    ParamType,
    ValueRejected,
    check_value,
    inspect_parameters,
    is_list_like,
    parse_text,
    split_top_level,
    type_from_default,
)

BUILTINS = ("run_dir", "pipeline")
_KEY = re.compile(rf"(?:(?P<step>{NAME_PATTERN.pattern})\.)?(?P<name>[A-Za-z_]\w*)")
_TEMPLATE = re.compile(r"\$\{([A-Za-z_]\w*)\}")


@dataclass(frozen=True)
class Override:
    """A value set on the command line (`text`, read by the declared type) or in a file (typed)."""

    key: str  # `name` or `step.name`
    value: Any
    source: str  # "-p" or the params file
    is_text: bool = False

    @property
    def step(self) -> str | None:
        return self.key.split(".")[0] if "." in self.key else None

    @property
    def name(self) -> str:
        return self.key.split(".")[-1]


@dataclass(frozen=True)
class PlannedStep:
    """One step, its parameters checked: `injected` goes to papermill, `parameters` is all of them."""

    name: str
    notebook: str  # as written in pipelines.yaml
    source: Path
    output: str  # file name of the executed notebook inside the run folder
    injected: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    n_cells: int = 0


@dataclass(frozen=True)
class RunPlan:
    """One run of a pipeline: its folder, and the steps with their parameters."""

    pipeline: str
    root: Path  # kernels' working directory
    run_dir: Path
    steps: tuple[PlannedStep, ...]
    label: str = ""  # "seed=1" for a sweep point, "" for a single run
    point: dict[str, Any] = field(default_factory=dict)  # swept key -> value


def parse_assignment(text: str) -> Override:
    """`key=value` from `-p` -> Override (the value stays text until its type is known)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not _KEY.fullmatch(key):
        raise DefinitionError("-p", f"expected name=value or step.name=value, got {text!r}")
    return Override(key, value.strip(), "-p", is_text=True)


def load_params_file(path: Path) -> list[Override]:
    """A YAML mapping `name: value` / `step.name: value`; a list value is a sweep (see module doc)."""
    source = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise DefinitionError(source, f"cannot read ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise DefinitionError(source, f"not valid YAML ({exc})") from exc
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise DefinitionError(source, "expected a mapping of parameter names to values")
    bad = [k for k in raw if not isinstance(k, str) or not _KEY.fullmatch(k)]
    if bad:
        raise DefinitionError(source, f"keys must be name or step.name, got {bad}")
    return [Override(k, v, source) for k, v in raw.items()]


def _render(value: Any) -> str:
    return (
        value
        if isinstance(value, str)
        else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...")
    )


def _output_names(steps: tuple[Step, ...]) -> list[str]:
    counts: dict[str, int] = {}
    for step in steps:
        counts[Path(step.notebook).name] = counts.get(Path(step.notebook).name, 0) + 1
    return [
        Path(s.notebook).name if counts[Path(s.notebook).name] == 1 else f"{Path(s.notebook).stem}-{s.name}.ipynb"
        for s in steps
    ]


class _Planner:
    """Holds the notebooks' declarations while the points of one invocation are planned."""

    def __init__(self, definitions: Definitions, pipeline: Pipeline) -> None:
        import nbformat

        self.root = definitions.root
        self.pipeline = pipeline
        self.declared: dict[str, dict[str, NotebookParameter]] = {}
        self.n_cells: dict[str, int] = {}
        for step in pipeline.steps:
            path = self.root / step.notebook
            self.declared[step.name] = {p.name: p for p in inspect_parameters(path, step.notebook)}
            self.n_cells[step.name] = len(nbformat.read(path, as_version=4).cells)
        self.problems: list[Problem] = []

    def targets(self, key: str, step: str | None) -> list[tuple[Step, ParamType]]:
        """The steps (and declared types) an unqualified or qualified name goes to."""
        return [
            (s, self.declared[s.name][key].type)
            for s in self.pipeline.steps
            if (step is None or s.name == step) and key in self.declared[s.name]
        ]

    def notebooks(self) -> str:
        return ", ".join(s.notebook for s in self.pipeline.steps)

    def check_keys(self, overrides: list[Override]) -> None:
        known_steps = [s.name for s in self.pipeline.steps]
        variables = set(self.pipeline.parameters)
        for o in overrides:
            if o.step is not None and o.step not in known_steps:
                self.problems.append(
                    Problem(
                        o.key,
                        self.notebooks(),
                        f"no step {o.step!r} in this pipeline (steps: {', '.join(known_steps)})",
                    )
                )
            elif not self.targets(o.name, o.step) and (o.step is not None or o.name not in variables):
                where = (
                    next(s.notebook for s in self.pipeline.steps if s.name == o.step) if o.step else self.notebooks()
                )
                names = sorted(
                    {n for s in self.pipeline.steps if o.step in (None, s.name) for n in self.declared[s.name]}
                )
                close = difflib.get_close_matches(o.name, names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(names) or 'none'}"
                self.problems.append(Problem(o.key, where, f"unknown parameter (from {o.source}){hint}"))
        for step in self.pipeline.steps:
            for name in step.parameters:
                if name not in self.declared[step.name]:
                    self.problems.append(
                        Problem(
                            name,
                            step.notebook,
                            f"pipelines.yaml sets it for step {step.name!r}, which does not declare it",
                        )
                    )
        referenced = {m for v in self._yaml_strings() for m in _TEMPLATE.findall(v)}
        for name in self.pipeline.parameters:
            if not self.targets(name, None) and name not in referenced:
                self.problems.append(
                    Problem(
                        name, self.notebooks(), "pipelines.yaml sets it, but no step declares it and no ${...} uses it"
                    )
                )

    def _yaml_strings(self) -> list[str]:
        values = list(self.pipeline.parameters.values()) + [
            v for s in self.pipeline.steps for v in s.parameters.values()
        ]
        return [v for v in values if isinstance(v, str)]

    def axis(self, o: Override) -> list[Override]:
        """The values one override takes: one, or several for a sweep."""
        types = [t for _, t in self.targets(o.name, o.step)] or [
            type_from_default(self.pipeline.parameters.get(o.name))
        ]
        list_like = any(is_list_like(t) for t in types)
        if o.is_text:
            many = not list_like or o.value.startswith("[")
            values = split_top_level(o.value) if many else [o.value]
        elif isinstance(o.value, list) and (not list_like or (o.value and all(isinstance(v, list) for v in o.value))):
            values = o.value
        else:
            values = [o.value]
        if not values:
            self.problems.append(Problem(o.key, self.notebooks(), f"empty sweep (from {o.source})"))
        return [Override(o.key, v, o.source, o.is_text) for v in values]

    def variables(self, chosen: dict[str, Override], run_dir: str) -> dict[str, str]:
        """Template namespace: pipeline-level parameters (overridden), then the builtins."""
        names: dict[str, Any] = dict(self.pipeline.parameters)
        names.update({o.name: o.value for o in chosen.values() if o.step is None})
        names.update({"run_dir": run_dir, "pipeline": self.pipeline.name})
        return {k: _render(v) for k, v in names.items()}

    def substitute(self, text: str, variables: dict[str, str], key: str, notebook: str) -> str | None:
        for _ in range(10):  # a variable may itself use ${...}; ten levels is beyond any real need
            missing = [m for m in _TEMPLATE.findall(text) if m not in variables]
            if missing:
                self.problems.append(
                    Problem(key, notebook, f"${{{missing[0]}}} is not defined (usable: {', '.join(sorted(variables))})")
                )
                return None
            new = _TEMPLATE.sub(lambda m: variables[m.group(1)], text)
            if new == text:
                return new
            text = new
        self.problems.append(Problem(key, notebook, "${...} references form a cycle"))
        return None

    def step(self, step: Step, output: str, chosen: dict[str, Override], variables: dict[str, str]) -> PlannedStep:
        injected: dict[str, Any] = {}
        effective: dict[str, Any] = {}
        for name, declared in self.declared[step.name].items():
            given = chosen.get(f"{step.name}.{name}") or chosen.get(name)
            if given is None and name in step.parameters:
                given = Override(name, step.parameters[name], f"pipelines.yaml step {step.name!r}")
            if given is None and name in self.pipeline.parameters:
                given = Override(name, self.pipeline.parameters[name], "pipelines.yaml")
            if given is None:
                effective[name] = declared.default if declared.literal else declared.default_source
                continue
            value, is_text = given.value, given.is_text
            if isinstance(value, str) and "${" in value:
                value, is_text = self.substitute(value, variables, name, step.notebook), True
                if value is None:
                    continue
            try:
                value = parse_text(value, declared.type) if is_text else check_value(value, declared.type)
            except ValueRejected as exc:
                self.problems.append(Problem(name, step.notebook, f"{exc} (from {given.source})"))
                continue
            injected[name] = effective[name] = value
        return PlannedStep(
            step.name,
            step.notebook,
            self.root / step.notebook,
            output,
            injected,
            effective,
            self.n_cells[step.name] + (1 if injected else 0),
        )


def _typed(key: str, given: Override, steps: tuple[PlannedStep, ...]) -> Any:
    """A swept value as the first step that takes it typed it (`-p seed=1` -> 1)."""
    for step in steps:
        if given.step in (None, step.name) and given.name in step.injected:
            return step.injected[given.name]
    return given.value


def _label(point: dict[str, Override]) -> str:
    return ", ".join(f"{o.key}={o.value if o.is_text else _render(o.value)}" for o in point.values())


def _folder(label: str, taken: set[str]) -> str:
    name = re.sub(r"[^A-Za-z0-9._=+-]+", "_", label.replace(", ", "_"))[:80] or "run"
    unique, n = name, 1
    while unique in taken:
        n += 1
        unique = f"{name}-{n}"
    taken.add(unique)
    return unique


def plan_runs(definitions: Definitions, name: str, overrides: list[Override], run_dir: Path) -> tuple[RunPlan, ...]:
    """Check everything that can be checked without a kernel, and plan each run.

    Args:
        definitions: the loaded pipelines file.
        name: the pipeline to run.
        overrides: `-f` files' values first, then `-p` values, in the order given (later wins).
        run_dir: the folder of this invocation; a sweep puts one sub-folder per point in it.

    Returns:
        One RunPlan for a single run, or one per sweep point (the product of all swept values).

    Raises:
        DefinitionError: unknown pipeline, a missing notebook, not exactly one parameters cell.
        ParameterError: every unknown, unroutable or wrong-typed parameter, all listed at once.
    """
    pipeline = definitions.get(name)
    planner = _Planner(definitions, pipeline)
    latest: dict[str, Override] = {}
    for o in overrides:
        latest.pop(o.key, None)  # re-inserted: the latest value also decides the sweep order
        latest[o.key] = o
    planner.check_keys(list(latest.values()))
    if planner.problems:
        raise ParameterError(name, planner.problems)
    axes = [planner.axis(o) for o in latest.values()]
    swept = [a[0].key for a in axes if len(a) > 1]
    outputs = _output_names(pipeline.steps)
    plans, taken = [], set()
    for values in itertools.product(*axes):
        chosen = {o.key: o for o in values}
        label = _label({k: chosen[k] for k in swept})
        point_dir = run_dir / _folder(label, taken) if swept else run_dir
        shown_dir = point_dir.relative_to(definitions.root) if point_dir.is_relative_to(definitions.root) else point_dir
        variables = planner.variables(chosen, str(shown_dir))
        steps = tuple(planner.step(s, out, chosen, variables) for s, out in zip(pipeline.steps, outputs))
        point = {k: _typed(k, chosen[k], steps) for k in swept}
        plans.append(RunPlan(name, definitions.root, point_dir, steps, label, point))
    if planner.problems:
        unique = list(dict.fromkeys(planner.problems))  # a problem repeats once per sweep point
        raise ParameterError(name, unique)
    return tuple(plans)
