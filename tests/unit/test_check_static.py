"""`fastbackend check`, static review: one fixture handler per finding, the original worker
scored as its review scored it, and the thin runtime-delegating shape of the generated handler."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastbackend.check import CheckOptions, Severity, review
from fastbackend.check.checklist import Area
from fastbackend.check.rules import RULES

FIXTURES = Path(__file__).parents[1] / "fixtures" / "handlers"

# fixture -> exactly the findings it must produce
EXPECTED = {
    "clean": set(),
    "thin_runtime_handler": set(),
    "async_handler": set(),
    "ready_flag_setup": {"setup-in-handler"},
    "model_load_in_handler": {"setup-in-handler"},
    "runtime_pip_install": {"runtime-install"},
    "no_main_guard": {"start-without-main-guard"},
    "no_payload_check": {"no-payload-check"},
    "returns_non_dict": {"non-dict-return"},
    "raises": {"raises"},
    "generator_handler": {"generator-test-input"},
    "generator_not_aggregated": {"generator-test-input", "stream-not-aggregated"},
    "async_blocking": {"blocking-in-async"},
    "error_dict": {"error-not-string"},
    "status_without_error": {"error-without-error-key"},
    "not_serialisable": {"not-serialisable"},
    "code_after_start": {"code-after-start"},
    "argv_parsing": {"argv-parsing"},
    "bad_import": {"import-error"},
    "original_worker": {
        "setup-in-handler",
        "runtime-install",
        "no-payload-check",
        "error-without-code",
        "no-structured-logging",
        "no-memory-cleanup",
        "no-test-input",
        "no-refresh-worker",
    },
}

# The original review's summary table, area by area (FastBackend 1.0.0-fast, 8/10, conditional go):
# compliant structure, I/O and start; error codes and structured logging missing (high); no local
# testing support (high); no payload validation (critical); setup in the handler and run-time
# installs (critical), no cleanup (high).
ORIGINAL_AREAS = {
    Area.HANDLER_STRUCTURE: "pass",
    Area.IO_FORMAT: "pass",
    Area.ERROR_HANDLING: "warn",
    Area.SERVERLESS_START: "pass",
    Area.LOCAL_TESTING: "warn",
    Area.PAYLOAD_LIMITS: "fail",
    Area.PERFORMANCE: "fail",
}


def check(name: str, **options) -> object:
    return review(CheckOptions(FIXTURES / f"{name}.py", **options))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_gives_exactly_its_findings(name: str) -> None:
    report = check(name)
    assert {f.rule_id for f in report.findings} == EXPECTED[name]
    for finding in report.findings:
        assert finding.file.endswith(".py") or finding.file.endswith(".json")
        assert finding.line >= 1 and finding.rule.fix and finding.detail


def test_every_finding_names_the_line_it_refers_to() -> None:
    report = check("ready_flag_setup")
    (finding,) = report.findings
    source = (FIXTURES / "ready_flag_setup.py").read_text().splitlines()
    assert source[finding.line - 1].strip() == "if not ENVIRONMENT_READY:"
    pip = check("runtime_pip_install").findings[0]
    assert "pip" in (FIXTURES / "runtime_pip_install.py").read_text().splitlines()[pip.line - 1]


def test_original_worker_scored_as_the_review_scored_it() -> None:
    report = check("original_worker")
    assert {a.area: a.status for a in report.areas} == ORIGINAL_AREAS
    assert report.score == 8.0
    assert report.verdict == "CONDITIONAL GO"
    assert report.count(Severity.CRITICAL) == 3
    assert report.exit_code() == 1
    compliant = {c.item for c in report.compliant}
    # what the review listed as compliant
    assert {
        "Handler signature",
        "Input extraction",
        "Return format",
        "`runpod.serverless.start` called",
        "Main guard",
        "Error handling",
    } <= compliant


@pytest.mark.parametrize("name", ["clean", "thin_runtime_handler", "async_handler"])
def test_clean_handlers_score_ten(name: str) -> None:
    report = check(name)
    assert report.score == 10.0 and report.verdict == "GO"
    assert report.exit_code(strict=True) == 0
    assert all(passed for _, passed, _ in report.checklist)


def test_thin_handler_is_followed_into_its_runtime_package() -> None:
    report = check("thin_runtime_handler")
    files = {c.file for c in report.compliant}
    runtime = {f for f in files if "fixture_runtime" in f}
    # payload check, error shape and cleanup were all found in the runtime, with their lines
    assert {Path(f).name for f in runtime} >= {"limits.py", "worker.py", "telemetry.py", "errors.py"}
    assert any(m.endswith("fixture_runtime/ops.py") for m in report.modules)


def test_catalogue_is_complete() -> None:
    for rule in RULES.values():
        assert rule.fix.endswith((".", ")")) and rule.title
    every_expected = set().union(*EXPECTED.values())
    assert every_expected <= set(RULES)


GENERATED = Path(__file__).resolve().parents[2] / "exported" / "handler.py"


def test_generated_handler_passes_strict_static_review() -> None:
    report = review(CheckOptions(GENERATED))
    assert [f.to_json() for f in report.findings] == []
    assert report.score == 10.0
