"""The reference generated from the code (`fastbackend reference`): in sync as committed, and a
change in the code that is not regenerated (a description removed or edited, an error code renamed,
a CLI flag added) fails, naming the file to regenerate or the file where a description belongs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from fastbackend import reference
from fastbackend.cli import build_parser
from worker.config import WorkerConfig, describe, setting
from worker.errors import FATAL_CODES, ErrorCode

ROOT = Path(__file__).resolve().parents[2]


def _committed(rel: str) -> str:
    return (ROOT / rel).read_text()


def _config_with(name: str, **metadata) -> type:
    """A copy of WorkerConfig whose field `name` has other metadata (the rest as declared)."""
    spec = [
        (f.name, f.type, dataclasses.field(default=f.default, metadata=metadata if f.name == name else f.metadata))
        for f in dataclasses.fields(WorkerConfig)
    ]
    return dataclasses.make_dataclass("WorkerConfig", spec, frozen=True)


def test_the_committed_reference_is_what_the_code_says():
    expected = reference.generated(ROOT, build_parser)
    assert reference.stale(ROOT, expected) == [], "run `fastbackend reference`"


def test_every_setting_has_a_description_and_every_code_a_meaning():
    assert all(describe(f).doc.strip() for f in dataclasses.fields(WorkerConfig))
    assert all(code.meaning.strip() for code in ErrorCode)


def test_a_setting_without_a_description_names_the_file_where_it_belongs():
    undocumented = _config_with("max_batch")  # declared as `max_batch: int = 64`, no setting()
    with pytest.raises(
        reference.ReferenceError, match=r"worker/config\.py: WorkerConfig\.max_batch has no description"
    ):
        reference.configuration_page(undocumented)
    with pytest.raises(reference.ReferenceError, match=r"docs/reference/configuration\.md and \.runpod/hub\.json"):
        reference.hub_env(undocumented)


def test_an_edited_description_makes_the_page_and_the_hub_file_stale():
    edited = _config_with("max_batch", **setting(64, "Images per job, at most.").metadata)
    expected = {
        reference.CONFIG_PAGE: reference.configuration_page(edited),
        reference.HUB_JSON: reference.hub_json(_committed(reference.HUB_JSON), edited),
    }
    assert reference.stale(ROOT, expected) == [reference.CONFIG_PAGE, reference.HUB_JSON]
    assert "Images per job, at most." in expected[reference.CONFIG_PAGE]


@dataclasses.dataclass(frozen=True)
class _Code:
    name: str
    value: str
    meaning: str


def test_a_renamed_error_code_makes_the_errors_page_stale():
    renamed = [
        _Code(*(("INVALID_REQUEST",) * 2 if c.name == "INVALID_INPUT" else (c.name, c.value)), c.meaning)
        for c in ErrorCode
    ]
    page = reference.errors_page(renamed, fatal=())
    assert reference.stale(ROOT, {reference.ERRORS_PAGE: page}) == [reference.ERRORS_PAGE]
    assert reference.errors_page(ErrorCode, FATAL_CODES) == _committed(reference.ERRORS_PAGE)


def test_a_code_without_a_meaning_names_errors_py():
    with pytest.raises(reference.ReferenceError, match=r"worker/errors\.py: ErrorCode\.NEW_CODE has no meaning"):
        reference.errors_page([_Code("NEW_CODE", "NEW_CODE", "")], fatal=())


def test_the_recycling_column_follows_fatal_codes():
    rows = {
        line.split(" | ")[0]: line for line in _committed(reference.ERRORS_PAGE).splitlines() if line.startswith("| `")
    }
    for code in ErrorCode:
        assert rows[f"| `{code.value}`"].endswith("| yes |" if code in FATAL_CODES else "| no |"), code


def _parser_with_flag(help_text: str | None):
    def build():
        parser = build_parser()
        sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        sub.choices["export"].add_argument("--dry-run", action="store_true", help=help_text)
        return parser

    return build


def test_a_new_cli_flag_makes_the_cli_page_stale():
    page = reference.cli_page(_parser_with_flag("show what would be written"))
    assert "`--dry-run`" in page
    assert reference.stale(ROOT, {reference.CLI_PAGE: page}) == [reference.CLI_PAGE]


def test_a_cli_flag_without_help_is_refused():
    with pytest.raises(reference.ReferenceError, match=r"`fastbackend export`.*`--dry-run` has no help="):
        reference.cli_page(_parser_with_flag(None))


def test_the_check_names_each_stale_file_and_the_command(tmp_path, capsys):
    for rel in (*reference.generated(ROOT, build_parser), reference.HUB_JSON):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(_committed(rel))
    assert reference.command(tmp_path, check=True, build_parser=build_parser) == 0
    (tmp_path / reference.ERRORS_PAGE).write_text("# Error codes\n")
    assert reference.command(tmp_path, check=True, build_parser=build_parser) == 1
    assert (
        "docs/reference/errors.md is out of date with the code: run `fastbackend reference`" in capsys.readouterr().err
    )
    assert reference.command(tmp_path, check=False, build_parser=build_parser) == 0
    assert (tmp_path / reference.ERRORS_PAGE).read_text() == _committed(reference.ERRORS_PAGE)


def test_parser_defaults_from_the_environment_do_not_leak_into_the_page(monkeypatch):
    monkeypatch.setenv("FASTBACKEND_BASE_MODEL", "/somewhere/else")
    assert reference.cli_page(build_parser) == _committed(reference.CLI_PAGE)
