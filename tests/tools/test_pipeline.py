"""`fastbackend pipeline run` on fixture notebooks: one notebook per behaviour, each with its
documented result (tests/fixtures/pipelines/; `make_fixtures.py` there writes them)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
import yaml

from fastbackend.cli import main

FIXTURES = Path(__file__).parents[1] / "fixtures" / "pipelines"
PIPELINES = FIXTURES / "pipelines.yaml"
RUN_FOLDER = re.compile(r"\d{8}T\d{6}Z-(?P<name>[\w-]+)")


def run(capsys, runs: Path, *args: str) -> tuple[int, str, str]:
    code = main(["pipeline", "run", *args, "--pipelines", str(PIPELINES), "--runs-dir", str(runs), "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


def only_folder(runs: Path, name: str) -> Path:
    folders = list(runs.iterdir())
    assert len(folders) == 1 and RUN_FOLDER.fullmatch(folders[0].name).group("name") == name, folders
    return folders[0]


def test_good_run_leaves_notebook_figure_parameters_and_metrics(capsys, tmp_path):
    code, out, _ = run(capsys, tmp_path, "good", "-p", "n=4", "-p", "flag=true", "-p", "items=x,y,z")
    assert code == 0
    folder = only_folder(tmp_path, "good")
    assert {p.name for p in folder.iterdir()} == {
        "good.ipynb",
        "good-fig1.png",
        "parameters.yaml",
        "metrics.json",
        "run.json",
    }
    assert (folder / "good-fig1.png").read_bytes().startswith(b"\x89PNG")
    assert json.loads((folder / "metrics.json").read_text()) == {
        "total": 2.0,
        "label": "demo",
        "n_items": 3,
        "flag": True,
    }
    step = yaml.safe_load((folder / "parameters.yaml").read_text())["steps"]["good"]
    assert step["parameters"] == {"n": 4, "scale": 0.5, "label": "demo", "flag": True, "items": ["x", "y", "z"]}
    assert step["injected"] == ["flag", "items", "n"]
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "ok" and record["failure"] is None and record["steps"][0]["figures"] == ["good-fig1.png"]
    assert re.search(r"^total\s+2\s*$", out, re.M) and re.search(r"^n_items\s+3\s*$", out, re.M)


@pytest.mark.parametrize("extra", [[], ["-p", "failing_cell.divisor=0"]], ids=["defaults", "injected"])
def test_failing_cell_stops_the_run_keeps_the_partial_notebook_and_names_the_cell(capsys, tmp_path, extra):
    code, out, _ = run(capsys, tmp_path, "failing-cell", *extra)
    assert code == 1
    folder = only_folder(tmp_path, "failing-cell")
    partial = folder / "failing_cell.ipynb"
    # Source cell 4 even when papermill's injected cell shifts the executed notebook's cells.
    assert "step 2/3 'failing_cell': failing_cell.ipynb, cell 4" in out
    assert "ZeroDivisionError: division by zero" in out and "ratio = 1 / divisor" in out
    assert f"partial notebook: {partial}" in out
    errors = [
        o for c in nbformat.read(partial, as_version=4).cells for o in c.get("outputs", []) if o.output_type == "error"
    ]
    assert [e.ename for e in errors] == ["ZeroDivisionError"]
    assert not (folder / "sweep.ipynb").exists(), "the step after the failing one must not run"
    assert json.loads((folder / "metrics.json").read_text())["before_failure"] == 1
    assert "after_failure" not in json.loads((folder / "metrics.json").read_text())
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "failed" and record["failure"]["cell_index"] == 4
    assert [s["status"] for s in record["steps"]] == ["ok", "failed"]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["-p", "alpah=1"], "alpah: unknown parameter (from -p); did you mean 'alpha'? (unknown_parameter.ipynb)"),
        (["-p", "gamma=1"], "gamma: unknown parameter (from -p); known: alpha, beta (unknown_parameter.ipynb)"),
        (["-p", "nosuch.alpha=1"], "nosuch.alpha: no step 'nosuch' in this pipeline"),
    ],
    ids=["typo", "unknown", "unknown-step"],
)
def test_unknown_parameter_is_refused_before_any_kernel_starts(capsys, tmp_path, args, expected):
    code, out, err = run(capsys, tmp_path, "unknown-parameter", *args)
    assert code == 2 and expected in err and "nothing was run" in err
    assert list(tmp_path.iterdir()) == [], "no run folder for a refused run"


@pytest.mark.parametrize(
    "args, parameter, expected",
    [
        (["-p", "count=abc"], "count", "expected int, got 'abc'"),
        (["-p", "count=2.5"], "count", "expected int, got '2.5'"),
        (["-p", "rate=fast"], "rate", "expected float, got 'fast'"),
        (["-p", "enabled=maybe"], "enabled", "expected bool (true/false), got 'maybe'"),
        (["-p", "limit=ten"], "limit", "expected int | None, got 'ten'"),
        (["-p", "options=[1]"], "options", "expected dict, got list [1]"),
        (["-f", str(FIXTURES / "wrong_type_params.yaml")], "count", "expected int, got float 1.5"),
        (["-f", str(FIXTURES / "wrong_type_params.yaml")], "name", "expected str, got int 3"),
    ],
    ids=["int", "int-from-float", "float", "bool", "optional-int", "dict", "file-int", "file-str"],
)
def test_wrong_typed_parameter_is_refused_naming_parameter_notebook_and_type(
    capsys, tmp_path, args, parameter, expected
):
    code, _, err = run(capsys, tmp_path, "wrong-type", *args)
    assert code == 2
    line = next(line for line in err.splitlines() if line.strip().startswith(f"- {parameter}:"))
    assert expected in line and line.endswith("(wrong_type.ipynb)")
    assert list(tmp_path.iterdir()) == []


def test_notebook_without_parameters_cell_is_refused(capsys, tmp_path):
    code, _, err = run(capsys, tmp_path, "no-parameters")
    assert code == 2
    assert "no_parameters.ipynb: a pipeline notebook needs exactly one cell tagged 'parameters', found no cell" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args",
    [["-p", "x=1,2,3", "--jobs", "2"], ["-f", str(FIXTURES / "sweep_params.yaml")]],
    ids=["cli-jobs-2", "params-file-jobs-1"],
)
def test_sweep_of_three_values_runs_each_in_its_own_folder_with_one_table(capsys, tmp_path, args):
    code, out, _ = run(capsys, tmp_path, "sweep", *args)
    assert code == 0
    folder = only_folder(tmp_path, "sweep")
    assert {p.name for p in folder.iterdir()} == {"x=1", "x=2", "x=3", "sweep.json", "summary.txt"}
    for x in (1, 2, 3):
        assert json.loads((folder / f"x={x}" / "metrics.json").read_text()) == {"square": x * x}
        assert yaml.safe_load((folder / f"x={x}" / "parameters.yaml").read_text())["sweep_point"] == {"x": x}
    sweep = json.loads((folder / "sweep.json").read_text())
    assert [(r["label"], r["status"], r["metrics"]) for r in sweep["runs"]] == [
        ("x=1", "ok", {"square": 1}),
        ("x=2", "ok", {"square": 4}),
        ("x=3", "ok", {"square": 9}),
    ]
    assert re.search(r"^\s+x=1\s+x=2\s+x=3$", out, re.M) and re.search(r"^square\s+1\s+4\s+9$", out, re.M)
    assert "sweep of 3 runs, 3 ok" in out


def test_a_failing_sweep_point_does_not_stop_the_others(capsys, tmp_path):
    code, out, _ = run(capsys, tmp_path, "failing-cell", "-p", "divisor=0,1")
    assert code == 1
    sweep = json.loads((only_folder(tmp_path, "failing-cell") / "sweep.json").read_text())
    assert [(r["label"], r["status"]) for r in sweep["runs"]] == [("divisor=0", "failed"), ("divisor=1", "ok")]
    assert "[divisor=0] pipeline 'failing-cell' failed at step 2/3" in out


def test_fail_fast_skips_the_remaining_points(capsys, tmp_path):
    code, out, _ = run(capsys, tmp_path, "failing-cell", "-p", "divisor=0,1", "--fail-fast")
    assert code == 1
    folder = only_folder(tmp_path, "failing-cell")
    sweep = json.loads((folder / "sweep.json").read_text())
    assert [r["status"] for r in sweep["runs"]] == ["failed", "skipped"]
    assert not (folder / "divisor=1").exists()


def test_jobs_below_one_is_refused(capsys, tmp_path):
    code, _, err = run(capsys, tmp_path, "sweep", "--jobs", "0")
    assert code == 2 and "--jobs must be at least 1" in err
    assert list(tmp_path.iterdir()) == []


def test_list_and_show_print_the_definitions(capsys):
    assert main(["pipeline", "list", "--pipelines", str(PIPELINES)]) == 0
    assert re.search(r"^two-steps\s+good -> consumer", capsys.readouterr().out, re.M)
    assert main(["pipeline", "show", "wrong-type", "--pipelines", str(PIPELINES)]) == 0
    assert re.search(r"^\s+limit\s+int \| None\s+None\s+notebook$", capsys.readouterr().out, re.M)
    assert main(["pipeline", "show", "nope", "--pipelines", str(PIPELINES)]) == 2
