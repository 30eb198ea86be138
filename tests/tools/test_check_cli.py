"""`fastbackend check` on the command line: exit status, Markdown sections, JSON, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastbackend.cli import main

FIXTURES = Path(__file__).parents[1] / "fixtures" / "handlers"
MARKDOWN_SECTIONS = (
    "## Compliant",
    "## Problems to fix",
    "## Prioritised recommendations",
    "## Pre-deployment checklist",
    "## Summary",
)


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(["check", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_markdown_has_the_review_sections(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run(capsys, str(FIXTURES / "original_worker.py"))
    assert code == 1  # critical items fail
    positions = [out.index(section) for section in MARKDOWN_SECTIONS]
    assert positions == sorted(positions)
    assert "**8/10: CONDITIONAL GO**" in out
    assert "| Payload Limits | ❌ fail | 5/10 | `no-payload-check` |" in out
    assert "original_worker.py:59" in out  # the ready flag's line, with a fix below it
    assert "- [ ] Payload size validation (`no-payload-check`)" in out


def test_json_report(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run(capsys, "--json", str(FIXTURES / "original_worker.py"))
    report = json.loads(out)
    assert code == 1 and report["score"] == 8.0 and report["verdict"] == "CONDITIONAL GO"
    assert {a["area"]: a["status"] for a in report["areas"]}["Performance"] == "fail"
    finding = next(f for f in report["findings"] if f["id"] == "setup-in-handler")
    assert finding["severity"] == "critical" and finding["line"] == 59 and finding["fix"]
    assert report["dynamic"]["ran"] is False
    assert len(report["checklist"]) == 13


@pytest.mark.parametrize(
    "fixture, plain, strict",
    [
        ("clean", 0, 0),  # nothing fails
        ("raises", 0, 1),  # only a high finding: a warning
        ("async_handler", 0, 0),
        ("no_payload_check", 1, 1),  # critical
    ],
)
def test_exit_status(capsys: pytest.CaptureFixture, fixture: str, plain: int, strict: int) -> None:
    path = str(FIXTURES / f"{fixture}.py")
    assert run(capsys, path)[0] == plain
    assert run(capsys, "--strict", path)[0] == strict


@pytest.mark.parametrize(
    "name, message",
    [
        ("broken_syntax.py", "broken_syntax.py:4: syntax error"),
        ("pip_magic.py", "pip_magic.py:3: not Python: `!pip install peft` is a notebook magic"),
        ("does_not_exist.py", "does_not_exist.py: no such file"),
        ("", "not a file"),
    ],
)
def test_unreviewable_path_is_one_clear_line(capsys: pytest.CaptureFixture, name: str, message: str) -> None:
    code, out, err = run(capsys, str(FIXTURES / name) if name else str(FIXTURES))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err and err.startswith("fastbackend check: ")


def test_default_path_is_the_generated_handler(
    capsys: pytest.CaptureFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys)
    assert code == 2 and "exported/handler.py: no such file" in err


def test_summary_and_output_file(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    code, out, _ = run(capsys, "--summary", str(FIXTURES / "clean.py"))
    assert code == 0 and out.strip().endswith("clean.py: 10/10 GO (0 critical, 0 high, 0 low; static)")
    target = tmp_path / "review" / "report.json"
    code, out, _ = run(capsys, "--json", "-o", str(target), str(FIXTURES / "original_worker.py"))
    assert code == 1 and "8/10 CONDITIONAL GO" in out and str(target) in out
    assert json.loads(target.read_text())["score"] == 8.0


def test_run_without_a_test_job_says_how_to_give_one(capsys: pytest.CaptureFixture) -> None:
    code, _, err = run(capsys, "--run", str(FIXTURES / "original_worker.py"))
    assert code == 2 and "--run needs a test job" in err and "--input" in err
    code, _, err = run(capsys, "--run", "--input", "{not json", str(FIXTURES / "clean.py"))
    assert code == 2 and "--input is not JSON" in err
    code, _, err = run(capsys, "--run", "--input", '{"nope": 1}', str(FIXTURES / "clean.py"))
    assert code == 2 and '"input" key' in err


def test_a_handler_in_a_package_runs_as_a_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastbackend.local import HandlerCommand

    monkeypatch.setenv("RUNPOD_WEBHOOK_GET_JOB", "https://api.runpod.ai/v2/x/job-take/$ID")  # never reach it

    (tmp_path / "exported").mkdir()
    (tmp_path / "exported" / "__init__.py").write_text("")
    (tmp_path / "exported" / "handler.py").write_text("")
    (tmp_path / "loose.py").write_text("")
    target = HandlerCommand.for_handler(tmp_path / "exported" / "handler.py", "python")
    assert target.argv == ("python", "-m", "exported.handler") and target.cwd == tmp_path.resolve()
    env = dict(target.env)
    assert env["RUNPOD_SKIP_AUTO_SYSTEM_CHECKS"] == "true" and "RUNPOD_WEBHOOK_GET_JOB" not in env
    assert HandlerCommand.for_handler(tmp_path / "loose.py", "python").argv == (
        "python",
        str((tmp_path / "loose.py").resolve()),
    )


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("deep.py", "import runpod\nx = " + "+".join(["1"] * 100_000) + "\n", "deep.py: nested too deeply"),
        ("nul.py", "import runpod\n\ndef handler(job):\n    return {}\x00\n", "nul.py:4: syntax error"),
        ("config.json", '{"base_model": "models/base", "top_k": [1, 2]}\n', "config.json: no RunPod handler here"),
    ],
)
def test_what_is_not_a_reviewable_handler_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture, tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    code, out, err = run(capsys, str(path))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err and "None" not in err


def test_future_improvements_list_only_what_is_missing(capsys: pytest.CaptureFixture, root: Path) -> None:
    _, ours, _ = run(capsys, str(root / "exported" / "handler.py"))
    improvements = ours.split("## Prioritised recommendations", 1)[1].split("## Pre-deployment checklist", 1)[0]
    assert "Future improvements" not in improvements  # monitoring, rate limiting and caching are all there
    assert all(f"**{topic}**: `" in improvements for topic in ("Monitoring", "Rate limiting", "Caching"))
    _, original, _ = run(capsys, str(FIXTURES / "original_worker.py"))
    assert "Future improvements (not scored):" in original and "not found;" in original
