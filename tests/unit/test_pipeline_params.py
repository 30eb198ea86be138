"""Pipeline definitions, typed parameters and planning: everything checked before a kernel starts.

No kernel runs here; the notebooks are only inspected."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastbackend.pipeline.definitions import load_definitions
from fastbackend.pipeline.errors import DefinitionError, ParameterError
from fastbackend.pipeline.params import ParamType, ValueRejected, inspect_parameters, parse_text, split_top_level
from fastbackend.pipeline.plan import Override, load_params_file, parse_assignment, plan_runs
from fastbackend.pipeline.summary import pipeline_help

FIXTURES = Path(__file__).parents[1] / "fixtures" / "pipelines"


@pytest.fixture(scope="module")
def fixtures():
    return load_definitions(FIXTURES / "pipelines.yaml")


def plan(definitions, name, *assignments, run_dir=None, files=()):
    overrides = [o for f in files for o in load_params_file(FIXTURES / f)] + [parse_assignment(a) for a in assignments]
    return plan_runs(definitions, name, overrides, run_dir or definitions.root / "runs" / "test")


def test_types_come_from_annotations_or_literal_defaults():
    declared = inspect_parameters(FIXTURES / "wrong_type.ipynb", "wrong_type.ipynb")
    assert [(p.name, str(p.type)) for p in declared] == [
        ("count", "int"),
        ("rate", "float"),
        ("enabled", "bool"),
        ("name", "str"),
        ("tags", "list[str]"),
        ("limit", "int | None"),
        ("options", "dict"),
    ]
    good = {p.name: p for p in inspect_parameters(FIXTURES / "good.ipynb", "good.ipynb")}
    assert good["scale"].help == "multiplies n"


@pytest.mark.parametrize(
    "text, ptype, expected",
    [
        ("7", ParamType("int"), 7),
        ("-3", ParamType("int"), -3),
        ("7", ParamType("float"), 7.0),
        ("1e-3", ParamType("float"), 0.001),
        ("TRUE", ParamType("bool"), True),
        ("no", ParamType("bool"), False),
        ("123", ParamType("str"), "123"),
        ('"a, b"', ParamType("str"), "a, b"),
        ("", ParamType("str"), ""),
        ("a,b", ParamType("list", "str"), ["a", "b"]),
        ("[1, 2]", ParamType("list", "str"), ["1", "2"]),
        ("1,2", ParamType("list", "int"), [1, 2]),
        ("[]", ParamType("list", "str"), []),
        ("None", ParamType("int", optional=True), None),
        ("{a: 1}", ParamType("dict"), {"a": 1}),
        ("3", ParamType("any"), 3),
    ],
)
def test_command_line_text_is_read_by_the_declared_type(text, ptype, expected):
    value = parse_text(text, ptype)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    "text, ptype",
    [
        ("2.5", ParamType("int")),
        ("true", ParamType("int")),
        ("x", ParamType("float")),
        ("2", ParamType("bool")),
        ("None", ParamType("int")),
        ("1,x", ParamType("list", "int")),
        ("[1]", ParamType("dict")),
    ],
)
def test_text_that_does_not_fit_is_rejected(text, ptype):
    with pytest.raises(ValueRejected, match="expected"):
        parse_text(text, ptype)


def test_commas_split_only_at_the_top_level():
    assert split_top_level('0,1, "a,b",[x,y]') == ["0", "1", '"a,b"', "[x,y]"]


def test_precedence_qualified_over_unqualified_over_step_over_pipeline(fixtures):
    (default,) = plan(fixtures, "two-steps")
    assert [s.injected["n"] for s in default.steps] == [5, 7]  # pipeline level, then the step's own
    (unqualified,) = plan(fixtures, "two-steps", "n=9")
    assert [s.injected["n"] for s in unqualified.steps] == [9, 9]
    (qualified,) = plan(fixtures, "two-steps", "n=9", "good.n=2")
    assert [s.injected["n"] for s in qualified.steps] == [2, 9]


def test_every_declared_parameter_is_recorded_but_only_set_ones_are_injected(fixtures):
    (run,) = plan(fixtures, "good", "n=4")
    assert run.steps[0].injected == {"n": 4}
    assert run.steps[0].parameters == {"n": 4, "scale": 0.5, "label": "demo", "flag": False, "items": ["a", "b"]}


def test_run_dir_and_pipeline_parameters_are_substituted(fixtures, tmp_path):
    (run,) = plan(fixtures, "two-steps", run_dir=tmp_path / "r")
    assert run.steps[1].injected["source_dir"] == f"{tmp_path}/r/data"
    (inside,) = plan(fixtures, "two-steps", run_dir=fixtures.root / "runs" / "x")
    assert inside.steps[1].injected["source_dir"] == "runs/x/data"  # relative to the kernels' cwd
    with pytest.raises(ParameterError, match=r"label: \$\{nope\} is not defined"):
        plan(fixtures, "good", "label=${nope}")


def test_sweeps_multiply_and_label_their_points(fixtures, tmp_path):
    runs = plan(fixtures, "good", "n=1,2", "scale=0.5,1", run_dir=tmp_path)
    assert [r.label for r in runs] == ["n=1, scale=0.5", "n=1, scale=1", "n=2, scale=0.5", "n=2, scale=1"]
    assert [r.point for r in runs][1] == {"n": 1, "scale": 1.0}
    assert [r.run_dir.name for r in runs] == ["n=1_scale=0.5", "n=1_scale=1", "n=2_scale=0.5", "n=2_scale=1"]


def test_a_list_parameter_sweeps_only_over_a_list_of_lists(fixtures):
    assert len(plan(fixtures, "good", "items=x,y")) == 1
    assert [r.steps[0].injected["items"] for r in plan(fixtures, "good", "items=[x],[y,z]")] == [["x"], ["y", "z"]]
    from_file = plan_runs(fixtures, "good", [Override("items", [["a"], ["b"]], "file")], fixtures.root / "runs" / "t")
    assert [r.steps[0].injected["items"] for r in from_file] == [["a"], ["b"]]
    single = plan_runs(fixtures, "good", [Override("items", ["a", "b"], "file")], fixtures.root / "runs" / "t")
    assert [r.steps[0].injected["items"] for r in single] == [["a", "b"]]


def test_command_line_wins_over_params_file(fixtures):
    runs = plan(fixtures, "sweep", "x=5", files=["sweep_params.yaml"])
    assert [r.steps[0].injected for r in runs] == [{"x": 5}]


def test_all_problems_are_reported_at_once(fixtures):
    with pytest.raises(ParameterError) as caught:
        plan(fixtures, "wrong-type", "count=x", "rate=y", "nope=1")
    assert [p.parameter for p in caught.value.problems] == ["nope"]  # unknown names first: types need routing
    with pytest.raises(ParameterError) as caught:
        plan(fixtures, "wrong-type", "count=x", "rate=y")
    assert [(p.parameter, p.notebook) for p in caught.value.problems] == [
        ("count", "wrong_type.ipynb"),
        ("rate", "wrong_type.ipynb"),
    ]


@pytest.mark.parametrize("text", ["novalue", "=3", "a.b.c=1", "1x=2"])
def test_malformed_assignment_is_refused(text):
    with pytest.raises(DefinitionError, match="expected name=value"):
        parse_assignment(text)


def test_unknown_pipeline_suggests_a_close_name(fixtures):
    with pytest.raises(DefinitionError, match="no pipeline 'god'.*did you mean 'good'"):
        fixtures.get("god")


@pytest.mark.parametrize(
    "text, message",
    [
        ("pipelines: {}", "top-level `pipelines:`"),
        ("pipelines: {p: {steps: []}}", "non-empty list"),
        ("pipelines: {p: {steps: [{name: x}]}}", "needs `notebook: <path>`"),
        ("pipelines: {p: {stpes: [a.ipynb]}}", "unknown key(s) ['stpes']"),
        ("pipelines: {p: {steps: [a.ipynb, a.ipynb]}}", "repeat"),
    ],
)
def test_malformed_definitions_are_refused(tmp_path, text, message):
    path = tmp_path / "pipelines.yaml"
    path.write_text(text)
    with pytest.raises(DefinitionError) as caught:
        load_definitions(path)
    assert message in str(caught.value)


def test_show_lists_every_parameter_with_type_default_and_origin(fixtures):
    text = pipeline_help(fixtures, "two-steps")
    assert "step 2/2: consumer (consumer.ipynb)" in text
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.startswith("  ") and line.split()}
    assert rows["scale"][:3] == ["float", "0.5", "notebook"]
    assert rows["source_dir"][:3] == ["str", '"${run_dir}/data"', "pipeline"]


def test_the_repository_pipelines_plan_without_problems(root):
    definitions = load_definitions(root / "pipelines.yaml")
    assert {"demo-models", "evaluate", "all"} <= set(definitions.pipelines)
    for name in definitions.pipelines:
        (run,) = plan_runs(definitions, name, [], root / "runs" / "check")
        assert run.steps
    (everything,) = plan_runs(definitions, "all", [parse_assignment("output_dir=/tmp/m")], root / "runs" / "check")
    assert [s.injected.get("base_model") for s in everything.steps] == [None, "/tmp/m/base", "/tmp/m/base"]
    (evaluate,) = plan_runs(definitions, "evaluate", [], root / "runs" / "check")
    assert evaluate.steps[1].injected == {
        "base_model": "models/base",
        "adapters_dir": "models/adapters",
        "adapter": "inverted",
    }
