"""Progress updates of long jobs (worker/telemetry.py): who gets a reporter, and the bounded rate."""

from __future__ import annotations

from worker.config import WorkerConfig, production_mode
from worker.telemetry import ProgressReporter, report, reporter_for, reporting

JOB = {"id": "job-1", "input": {}}


def test_only_production_jobs_at_or_over_the_threshold_report():
    sent = []

    def make(images, production=True, min_images=32):
        return reporter_for(
            JOB, images, production=production, min_images=min_images, interval_ms=1000, send=lambda *a: sent.append(a)
        )

    assert make(32) is not None and make(64).total == 64
    assert make(31) is None, "small jobs finish before anyone polls"
    assert make(64, production=False) is None, "the local API and --test_input have nowhere to post it"
    assert make(64, min_images=0) is None, "0 turns progress off"
    assert reporter_for({"input": {}}, 64, production=True, min_images=1, interval_ms=0, send=print) is None
    assert production_mode({"RUNPOD_WEBHOOK_POST_OUTPUT": "https://api.runpod.ai/v2/x/job-done/..."})
    assert not production_mode({}) and WorkerConfig().progress_min_images == 32


def test_updates_are_rate_bounded_and_the_first_goes_out_at_once():
    now = [0.0]
    sent = []
    reporter = ProgressReporter(JOB, 100, lambda job, p: sent.append(p), interval_s=1.0, clock=lambda: now[0])
    for done in range(1, 101):
        now[0] = done * 0.05  # 20 images a second for 5 s
        reporter(done, "decode")
    assert sent[0] == {"done": 1, "total": 100, "stage": "decode"}
    assert 5 <= len(sent) <= 6, "one update a second, not one per image"
    assert [p["done"] for p in sent] == sorted(p["done"] for p in sent)


def test_a_failing_sender_never_fails_the_job_and_report_needs_a_current_reporter():
    def broken(job, progress):
        raise ConnectionError("RunPod unreachable")

    reporter = ProgressReporter(JOB, 10, broken, interval_s=0)
    reporter(1, "decode")
    assert reporter.sent == 1
    seen = []
    report(1, "decode")  # no reporter: nothing happens
    with reporting(ProgressReporter(JOB, 10, lambda job, p: seen.append(p), interval_s=0)):
        report(3, "fetch")
    report(4, "decode")
    assert seen == [{"done": 3, "total": 10, "stage": "fetch"}]
