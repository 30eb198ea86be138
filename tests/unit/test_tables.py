"""The one table printer every command uses (fastbackend/tables.py) and the tables built on it."""

from __future__ import annotations

from fastbackend.display import answer_table
from fastbackend.mainjob import accuracy_table
from fastbackend.tables import table


def test_columns_align_under_a_dashed_rule():
    assert table([["name", "n"], ["a", "100"], ["longer", "2"]]).splitlines() == [
        "name    n",
        "------  ---",
        "a       100",
        "longer  2",
    ]


def test_every_command_prints_through_it():
    accuracy = accuracy_table({"base_accuracy": 0.98, "inverted/base_accuracy": 0.1, "inverted/adapter_accuracy": 0.9})
    assert accuracy == table(
        [["task", "base model", "with adapter"], ["digits", "98.0%", "-"], ["inverted", "10.0%", "90.0%"]]
    )
    shown = answer_table(["a.png"], {"predictions": [{"label": "3", "score": 0.5, "top_k": []}], "adapter": None})
    assert (
        shown.splitlines()[:3]
        == table([["image", "label", "score", "top-k"], ["a.png", "3", "0.500", ""]]).splitlines()
    )
