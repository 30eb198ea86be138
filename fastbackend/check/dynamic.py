"""Stage 6 (opt-in, `--run`): execute the handler module the ways RunPod documents.

1. `--test_input '<job>'`: the process must exit 0 (the SDK exits 1 when the job failed).
2. `--rp_serve_api` on a free loopback port: /runsync with the test job (cold start: spawn to
   first answer), /run + /status, an oversized payload (over RunPod's 20 MB /runsync limit), two
   malformed ones, and for a FastBackend handler (its `health` op names the task it serves) the
   test job with each of that task's own request fields of the wrong type, then warm /runsync
   requests (they also prove the worker survived).
"""

from __future__ import annotations

import copy
import json
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastbackend.check import checklist as R
from fastbackend.check.answers import Answer, post, sdk_traceback
from fastbackend.check.model import Finding, Probe
from fastbackend.local import HandlerCommand, LocalServer, run_test_input

OVERSIZE_BYTES = 21 * 1024 * 1024  # over /runsync's 20 MB, so over any sane handler limit
PADDING_KEY = "_fastbackend_check_padding"
SIZE_WORDS = re.compile(r"(?i)payload|too.?large|too.?big|size|limit|bytes|\bMB\b")
LAZY_FACTOR, LAZY_FLOOR_S = 10.0, 2.0  # first job this much slower than warm ones (and over the floor)


@dataclass(frozen=True)
class RunOptions:
    """What `--run` needs: the test job, the interpreter, and its limits."""

    job: dict[str, Any]
    job_source: str
    python: str
    timeout_s: float = 180.0
    max_cold_start_s: float = 60.0
    warm_requests: int = 5


@dataclass
class DynamicResult:
    """Filled in while the probes run (hence not frozen); read once by the review."""

    probes: list[Probe] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


class _Recorder:
    def __init__(self, result: DynamicResult, file: str, line: int, generator: bool) -> None:
        self.result, self.file, self.line, self.generator = result, file, line, generator

    def probe(
        self, item: str, name: str, passed: bool, seconds: float | None, detail: str, rule_id: str | None = None
    ) -> bool:
        self.result.probes.append(Probe(item, name, passed, seconds, detail))
        if not passed and rule_id:
            self.result.findings.append(Finding(rule_id, self.file, self.line, f"{name}: {detail}"))
        return passed


def _short(value: Any, limit: int = 160) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _last_error(output: str) -> str:
    lines = [ln for ln in output.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower() or "Traceback" in ln]
    return _short((errors or lines or ["(no output)"])[-1].strip(), 240)


def _test_input(command: HandlerCommand, options: RunOptions, rec: _Recorder) -> None:
    done = run_test_input(options.job, timeout=options.timeout_s, command=command)
    name = f"`--test_input` ({options.job_source})"
    rec.result.metrics["test_input_s"] = round(done.seconds, 3)
    if done.returncode is None:
        rec.probe(
            R.RUN_TEST_INPUT, name, False, done.seconds, f"no exit within {options.timeout_s:.0f} s", "run-test-input"
        )
    elif done.returncode != 0:
        rec.probe(
            R.RUN_TEST_INPUT,
            name,
            False,
            done.seconds,
            f"exit {done.returncode}: {_last_error(done.log)}",
            "run-test-input",
        )
    elif "generator object" in done.log:
        rec.probe(
            R.RUN_TEST_INPUT,
            name,
            False,
            done.seconds,
            "printed a generator object; nothing ran",
            "generator-test-input",
        )
    else:
        rec.probe(R.RUN_TEST_INPUT, name, True, done.seconds, f"exit 0; {_short(done.result_text) or 'completed'}")


def _completed(answer: Answer, generator: bool) -> tuple[bool, str]:
    if answer.status != 200:
        return False, answer.error or f"HTTP {answer.status}: {_short(answer.body)}"
    body = answer.body if isinstance(answer.body, dict) else {}
    if body.get("status") != "COMPLETED":
        return False, f"{body.get('status', '?')}: {_short(body.get('error', body))}"
    output = body.get("output")
    if generator and _streamed_error(output):
        return False, f"FAILED (streamed error): {_short(_streamed_error(output))}"
    if not generator and not isinstance(output, dict):
        return False, f"COMPLETED, but the output is {type(output).__name__}, not a JSON object"
    return True, f"COMPLETED: {_short(output)}"


def _rule_for(answer: Answer) -> str:
    """A completed job with the wrong output shape is a return-format problem; a job the server answered
    with an error is the handler failing its own test job (an answer, not silence); the rest the API's."""
    if answer.job_status == "COMPLETED":
        return "non-dict-return"
    return "run-test-job-failed" if answer.status == 200 and answer.job_status == "FAILED" else "run-local-api"


def _padded(job: dict[str, Any]) -> dict[str, Any]:
    job = copy.deepcopy(job)
    padding = "A" * OVERSIZE_BYTES
    if isinstance(job.get("input"), dict):
        job["input"][PADDING_KEY] = padding
    else:
        job["input"] = {PADDING_KEY: padding}
    return job


def _malformed(job: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    source = job.get("input") if isinstance(job.get("input"), dict) else {}
    wrong = {key: {"unexpected": [None, 1.5]} for key in source} or {"unexpected": [None, 1.5]}
    return [("empty input `{}`", {"input": {}}), ("every field of the test input of the wrong type", {"input": wrong})]


def _served_task(server: LocalServer, timeout: float) -> str | None:
    """The task a FastBackend handler serves (its `health` op); None for any other handler."""
    answer = _post(server, "/runsync", {"input": {"op": "health"}}, timeout)
    output = answer.body.get("output") if isinstance(answer.body, dict) else None
    task = output.get("task") if isinstance(output, dict) else None
    return task.get("name") if isinstance(task, dict) and isinstance(task.get("name"), str) else None


def _task_malformed(job: dict[str, Any], task: str | None) -> list[tuple[str, dict[str, Any]]]:
    """The test job with each of the served task's own request fields (worker/tasks) of the wrong type."""
    from worker.tasks import TASKS

    if task not in TASKS or not isinstance(job.get("input"), dict):
        return []
    fields = [f for f in TASKS[task].request.model_fields if f not in ("images", "adapter", "op")]
    return [
        (f"{task}'s field `{f}` of the wrong type", {"input": {**job["input"], f: {"unexpected": [None, 1.5]}}})
        for f in fields
    ]


def _streamed_error(output: Any) -> str | None:
    # On RunPod a yielded dict with an `error` ends a streaming job as FAILED (rp_job.handle_job);
    # the local API only aggregates the chunks, so read it the way production does.
    if isinstance(output, list):
        return next((str(c["error"]) for c in output if isinstance(c, dict) and c.get("error")), None)
    return None


def _rejected(answer: Answer) -> tuple[str, str]:
    """('accepted' | 'raised' | 'refused' | 'broken', detail) for an answer the handler should refuse."""
    if answer.status != 200:
        return "broken", answer.error or f"HTTP {answer.status}"
    body = answer.body if isinstance(answer.body, dict) else {}
    if body.get("status") == "COMPLETED":
        streamed = _streamed_error(body.get("output"))
        if streamed:
            return "refused", f"FAILED (streamed error): {_short(streamed)}"
        return "accepted", f"COMPLETED: {_short(body.get('output'))}"
    error = body.get("error")
    if sdk_traceback(error):
        message = _short(json.loads(error).get("error_message", "")) if error.startswith("{") else ""
        return "raised", f"the handler raised (the error is the SDK's traceback blob): {message}"
    return "refused", f"FAILED: {_short(error)}"


def _post(server: LocalServer, path: str, body: Any, timeout: float) -> Answer:
    return post(server.url + path, body, timeout)


def _serve(command: HandlerCommand, options: RunOptions, rec: _Recorder) -> None:
    job, m, api = options.job, rec.result.metrics, R.RUN_LOCAL_API
    with LocalServer(command) as server:
        ready = server.wait_ready(options.timeout_s)
        if ready is None:
            why = "exited" if not server.alive() else f"did not answer within {options.timeout_s:.0f} s"
            rec.probe(api, "`--rp_serve_api` start", False, None, f"{why}: {server.log_tail()[-400:]}", "run-local-api")
            return
        m["server_ready_s"] = round(ready, 3)
        first = _post(server, "/runsync", job, options.timeout_s)
        m["cold_start_s"] = round(time.perf_counter() - server.spawned, 3)
        m["first_job_ms"] = round(first.seconds * 1000, 1)
        ok, detail = _completed(first, rec.generator)
        rec.probe(api, "/runsync (test job)", ok, first.seconds, detail, _rule_for(first))
        queued = _post(server, "/run", job, options.timeout_s)
        job_id = queued.body.get("id") if isinstance(queued.body, dict) else None
        status = _post(server, f"/status/{job_id}", b"", options.timeout_s) if job_id else queued
        ok, detail = _completed(status, rec.generator)
        rec.probe(
            api, "/run + /status", ok, queued.seconds + (status.seconds if job_id else 0), detail, _rule_for(status)
        )
        big = _post(server, "/runsync", _padded(job), options.timeout_s)
        verdict, detail = _rejected(big)
        # Raising with a size error still refuses the payload; the raise is the error-handling probes' concern.
        passed = verdict in ("refused", "raised") and bool(SIZE_WORDS.search(detail.split(":", 1)[-1]))
        if verdict in ("refused", "raised") and not passed:
            detail = f"refused, but not for its size: {detail}"
        rec.probe(
            R.RUN_OVERSIZE,
            f"oversized payload ({OVERSIZE_BYTES // 2**20} MB)",
            passed,
            big.seconds,
            detail,
            "run-oversize",
        )
        task = _served_task(server, options.timeout_s)
        for label, bad in [*_malformed(job), *_task_malformed(job, task)]:
            answer = _post(server, "/runsync", bad, options.timeout_s)
            verdict, detail = _rejected(answer)
            rec.probe(
                R.RUN_MALFORMED,
                f"malformed payload: {label}",
                verdict in ("refused", "accepted"),
                answer.seconds,
                detail,
                "run-malformed",
            )
        _warm(server, options, rec, first)


def _warm(server: LocalServer, options: RunOptions, rec: _Recorder, first: Answer) -> None:
    m = rec.result.metrics
    times, failures, rules = [], [], set()
    for _ in range(options.warm_requests):
        answer = _post(server, "/runsync", options.job, min(options.timeout_s, 60.0))
        ok, detail = _completed(answer, rec.generator)
        (times if ok else failures).append(answer.seconds if ok else detail)
        rules |= set() if ok else {_rule_for(answer)}
    if failures:
        rec.probe(
            R.RUN_COLD_START,
            "warm /runsync",
            False,
            None,
            f"{len(failures)} of {options.warm_requests} failed after the probes: {failures[0]}",
            "run-local-api" if rules - {"run-test-job-failed"} else "run-test-job-failed",
        )
        return
    p50 = statistics.median(times)
    m.update(warm_p50_ms=round(p50 * 1000, 2), warm_max_ms=round(max(times) * 1000, 2), warm_requests=len(times))
    cold = m["cold_start_s"]
    rec.probe(
        R.RUN_COLD_START,
        "cold start",
        cold <= options.max_cold_start_s,
        cold,
        f"spawn to first answer {cold:.2f} s (limit {options.max_cold_start_s:.0f} s)",
        "run-slow-cold-start",
    )
    lazy = first.seconds >= LAZY_FLOOR_S and first.seconds >= LAZY_FACTOR * p50
    rec.probe(
        R.RUN_COLD_START,
        "first job vs warm",
        not lazy,
        first.seconds,
        f"first job {first.seconds * 1000:.0f} ms, warm p50 {p50 * 1000:.1f} ms over {len(times)} requests",
        "run-lazy-setup",
    )


def run_dynamic(handler_path: Path, options: RunOptions, anchor: tuple[str, int], generator: bool) -> DynamicResult:
    """Run every dynamic probe against the handler module; never raises for a failing handler."""
    started = time.perf_counter()
    result = DynamicResult()
    command = HandlerCommand.for_handler(handler_path, options.python)
    rec = _Recorder(result, anchor[0], anchor[1], generator)
    _test_input(command, options, rec)
    _serve(command, options, rec)
    result.seconds = time.perf_counter() - started
    return result
