"""`fastbackend check --run`: the dynamic checks, against real processes on free loopback ports.

Each review starts the fixture handler twice (`--test_input`, then `--rp_serve_api`) and shuts
it down; fixture handlers import no ML stack, so one review takes a few seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_check_rules import THIN, make_project

from fastbackend.check import CheckOptions, review

FIXTURES = Path(__file__).parents[1] / "fixtures" / "handlers"


def run_review(path: Path, **options):
    return review(CheckOptions(path, run=True, timeout_s=60, **options))


def probe(report, name: str):
    return next(p for p in report.probes if p.name.startswith(name))


def leftover_servers(marker: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if any(marker.encode() in a for a in args) and b"--rp_serve_api" in args:
            found.append(cmdline.parent.name)
    return found


@pytest.mark.parametrize("name", ["clean", "thin_runtime_handler"])
def test_clean_handler_scores_ten_with_run(name: str) -> None:
    report = run_review(FIXTURES / f"{name}.py")
    assert [f.to_json() for f in report.findings] == []
    assert report.score == 10.0 and report.verdict == "GO" and report.ran
    assert all(p.passed for p in report.probes), [p.to_json() for p in report.probes]
    assert {p.name.split(" (")[0] for p in report.probes} >= {
        "`--test_input`",
        "/runsync",
        "/run + /status",
        "cold start",
        "first job vs warm",
    }
    assert "PAYLOAD_TOO_LARGE" in probe(report, "oversized payload").detail
    assert 0 < report.metrics["cold_start_s"] < 60 and report.metrics["warm_p50_ms"] > 0
    assert not leftover_servers(f"{name}.py")


def test_setup_on_the_first_job_is_measured() -> None:
    report = run_review(FIXTURES / "ready_flag_setup.py")
    assert {f.rule_id for f in report.findings} == {"setup-in-handler", "run-lazy-setup"}
    assert report.metrics["first_job_ms"] > 2500  # the fixture's setup sleeps 3 s


def test_oversized_payload_accepted_is_a_finding() -> None:
    report = run_review(FIXTURES / "no_payload_check.py")
    assert {f.rule_id for f in report.findings} == {"no-payload-check", "run-oversize"}
    assert "COMPLETED" in probe(report, "oversized payload").detail


def test_malformed_payload_that_raises_is_a_finding() -> None:
    report = run_review(FIXTURES / "raises.py")
    assert {f.rule_id for f in report.findings} == {"raises", "run-malformed"}
    assert "raised" in probe(report, "malformed payload: empty input").detail


def test_generator_handler_streams_through_the_api_but_not_test_input() -> None:
    report = run_review(FIXTURES / "generator_handler.py")
    assert {f.rule_id for f in report.findings} == {"generator-test-input"}  # confirmed, not duplicated
    assert not probe(report, "`--test_input`").passed
    assert probe(report, "/runsync").passed and "'word': 'hello'" in probe(report, "/runsync").detail


def test_worker_that_cannot_start_is_no_go(tmp_path: Path) -> None:
    source = THIN.replace(
        "    WORKER.setup_or_exit()\n", "    raise SystemExit('setup failed: no model at /models/base')\n"
    )
    report = run_review(make_project(tmp_path, {"handler.py": source}), input='{"input": {"text": "hi"}}')
    assert {f.rule_id for f in report.findings} == {"run-test-input", "run-local-api"}
    assert report.verdict == "NO-GO" and report.exit_code() == 1
    assert "no model at /models/base" in probe(report, "`--test_input`").detail
    not_run = {item for item, passed, failing in report.checklist if failing == ("not run",)}
    assert not_run == {"Oversized payload rejected", "Malformed payload answered", "Cold start and warm latency"}


def test_generated_handler_scores_ten_with_run(models_dir, monkeypatch) -> None:
    """The project's own exported/handler.py, run for real against the demo models (never models/)."""
    monkeypatch.setenv("FASTBACKEND_BASE_MODEL", str(models_dir / "base"))
    monkeypatch.setenv("FASTBACKEND_ADAPTERS_DIR", str(models_dir / "adapters"))
    generated = Path(__file__).resolve().parents[2] / "exported" / "handler.py"
    report = review(CheckOptions(generated, run=True, timeout_s=180))
    assert [f.to_json() for f in report.findings] == []
    assert all(p.passed for p in report.probes), [p.to_json() for p in report.probes]
    assert report.score == 10.0 and report.verdict == "GO"
    # the check knows the served task's request: each of its own fields of the wrong type, refused naming it
    for field in ("top_k", "return_logits"):
        task_probe = probe(report, f"malformed payload: image-classification's field `{field}`")
        assert task_probe.detail.startswith(f"FAILED: INVALID_INPUT: {field}"), task_probe.detail


def test_a_handler_failing_its_own_test_job_is_no_go_and_was_answered() -> None:
    # The clean fixture answers INVALID_INPUT for this job: an answer, not silence, and no 9.3/10.
    report = run_review(FIXTURES / "thin_runtime_handler.py", input='{"input": {"images": "x"}}')
    failed = [f for f in report.findings if f.rule_id == "run-test-job-failed"]
    assert failed and all("INVALID_INPUT" in f.detail for f in failed), [f.to_json() for f in report.findings]
    assert "run-local-api" not in {f.rule_id for f in report.findings}
    assert report.verdict == "NO-GO" and report.score <= 5.0
