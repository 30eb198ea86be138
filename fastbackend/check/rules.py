"""The catalogue: every finding `fastbackend check` can report, with its severity, area and fix.

A rule id is stable: suppressions and CI scripts match on it.
"""

from __future__ import annotations

from fastbackend.check.checklist import (
    ERRORS,
    IMPORT_RUNPOD,
    INPUT,
    LOCAL_TESTING,
    MAIN_GUARD,
    MEMORY_CLEANUP,
    NO_INSTALLS,
    NO_SOURCE_ERRORS,
    PAYLOAD_VALIDATION,
    RETURN_FORMAT,
    RUN_COLD_START,
    RUN_LOCAL_API,
    RUN_MALFORMED,
    RUN_OVERSIZE,
    RUN_TEST_INPUT,
    SETUP_TIMING,
    SIGNATURE,
    START_CALLED,
    Area,
    Rule,
    Severity,
)

C, H, L = Severity.CRITICAL, Severity.HIGH, Severity.LOW
_HS, _IO, _ERR, _START = Area.HANDLER_STRUCTURE, Area.IO_FORMAT, Area.ERROR_HANDLING, Area.SERVERLESS_START
_LT, _PL, _PERF = Area.LOCAL_TESTING, Area.PAYLOAD_LIMITS, Area.PERFORMANCE

_RULES = (
    # Handler structure
    Rule(
        "no-handler",
        C,
        _HS,
        SIGNATURE,
        "No handler function",
        'Define `def handler(job): ...` and pass it as `runpod.serverless.start({"handler": handler})`.',
    ),
    Rule(
        "handler-signature",
        C,
        _HS,
        SIGNATURE,
        "Handler does not take exactly one argument (the job)",
        "RunPod calls `handler(job)` with one positional argument: declare `def handler(job)` "
        "(extra parameters need defaults).",
    ),
    Rule(
        "syntax-error",
        C,
        _HS,
        NO_SOURCE_ERRORS,
        "A module the handler imports does not parse",
        "Fix the syntax error; the worker crashes at start otherwise.",
    ),
    Rule(
        "import-error",
        C,
        _HS,
        NO_SOURCE_ERRORS,
        "An import of project code cannot succeed",
        "Import a name the module defines (or fix the module path); the worker crashes when it runs this import.",
    ),
    # Input/output format
    Rule(
        "no-input-read",
        H,
        _IO,
        INPUT,
        'The job\'s input is never read from `job["input"]`',
        'Read the payload with `job["input"]` (or `job.get("input")`): RunPod puts the request body there.',
    ),
    Rule(
        "non-dict-return",
        H,
        _IO,
        RETURN_FORMAT,
        "A return path does not return a dict",
        'Return a JSON object on every path: `{"status": "success", ...}` or the error shape; '
        "a bare value or None leaves clients without a status and errors cannot be signalled.",
    ),
    Rule(
        "not-serialisable",
        H,
        _IO,
        RETURN_FORMAT,
        "A result holds a value JSON cannot encode",
        "Convert before returning (`.tolist()`, `float(x)`, `base64.b64encode(b).decode()`, ISO strings); "
        "RunPod never posts a non-JSON result and the job hangs until its timeout.",
    ),
    Rule(
        "stream-not-aggregated",
        H,
        _IO,
        RETURN_FORMAT,
        "Generator handler without `return_aggregate_stream`",
        'Pass `"return_aggregate_stream": True` to `runpod.serverless.start`, or /run and /runsync '
        "return an empty output (only /stream sees the chunks).",
    ),
    # Error handling
    Rule(
        "raises",
        H,
        _ERR,
        ERRORS,
        "Exceptions escape the handler",
        "Catch exceptions (one `try/except Exception` around the work) and return the error shape; a raised "
        "exception reaches clients as a JSON blob with a traceback and no error code.",
    ),
    Rule(
        "error-not-string",
        C,
        _ERR,
        ERRORS,
        "The returned `error` is not a string",
        'Make `error` a string (`"CODE: message"`) and put structured details in other keys: RunPod '
        "mis-counts a job whose `error` is a dict or an exception object.",
    ),
    Rule(
        "error-without-error-key",
        H,
        _ERR,
        ERRORS,
        "An error is returned without an `error` key",
        "Return the failure under `error` (a string): without it RunPod reports the job COMPLETED.",
    ),
    Rule(
        "error-without-code",
        H,
        _ERR,
        ERRORS,
        "Error responses carry no machine-readable code",
        "Add a stable `code` (an enum such as INVALID_INPUT, PAYLOAD_TOO_LARGE, INTERNAL) next to "
        "`error`, with `message`, `job_id` and `timestamp`; clients cannot branch on free text.",
    ),
    Rule(
        "no-structured-logging",
        H,
        _ERR,
        ERRORS,
        "No structured logging",
        "Log one JSON object per line (time, level, job id, event, duration, error code) through your "
        "own logger with a JSON formatter; `import runpod` reconfigures the root logger.",
    ),
    Rule(
        "swallowed-exception",
        L,
        _ERR,
        ERRORS,
        "An exception is caught and silently dropped",
        "Log it or turn it into the error shape; `except Exception: pass` hides failures.",
    ),
    Rule(
        "no-refresh-worker",
        L,
        _ERR,
        ERRORS,
        "No `refresh_worker` on fatal errors",
        'Return `"refresh_worker": True` with the error when the worker is broken (out of memory, corrupt '
        "state) so RunPod recycles it instead of sending it more jobs.",
    ),
    # Serverless start
    Rule(
        "no-start",
        C,
        _START,
        START_CALLED,
        "`runpod.serverless.start` is never called",
        'End the module with `if __name__ == "__main__": runpod.serverless.start({"handler": handler})`.',
    ),
    Rule(
        "no-runpod-import",
        C,
        _START,
        IMPORT_RUNPOD,
        "`runpod` is used but never imported",
        "Add `import runpod` (in the main guard, so importing the module stays cheap).",
    ),
    Rule(
        "start-without-main-guard",
        C,
        _START,
        MAIN_GUARD,
        "The worker starts when the module is imported",
        'Move `runpod.serverless.start(...)` under `if __name__ == "__main__":` so tests and tools can '
        "import the handler without starting a worker.",
    ),
    Rule(
        "code-after-start",
        H,
        _START,
        START_CALLED,
        "Code after `runpod.serverless.start` never runs",
        "`start()` serves until the process ends: move setup before it, cleanup into the handler or atexit.",
    ),
    # Local testing
    Rule(
        "no-test-input",
        H,
        _LT,
        LOCAL_TESTING,
        "No `test_input.json` for local testing",
        'Add `test_input.json` (`{"input": {...}}`) beside the handler: `python handler.py` runs it, and '
        "`--test_input` / `--rp_serve_api` are how RunPod documents testing before deploying.",
    ),
    Rule(
        "bad-test-input",
        H,
        _LT,
        LOCAL_TESTING,
        "`test_input.json` is not a valid test job",
        'Make it a JSON object with an `input` key: `{"input": {...}}`.',
    ),
    Rule(
        "argv-parsing",
        H,
        _LT,
        LOCAL_TESTING,
        "The module parses the command line itself",
        "RunPod's flags (`--test_input`, `--rp_serve_api`, `--rp_log_level`) reach your parser: use "
        "`parse_known_args()` or configuration from environment variables, never `sys.argv` directly.",
    ),
    Rule(
        "generator-test-input",
        H,
        _LT,
        LOCAL_TESTING,
        "`--test_input` does not run a generator handler",
        "RunPod's `--test_input` never iterates a generator: test it through `--rp_serve_api` (/runsync "
        "aggregates the chunks), or return a dict if you do not stream.",
    ),
    # Payload limits
    Rule(
        "no-payload-check",
        C,
        _PL,
        PAYLOAD_VALIDATION,
        "No payload size validation",
        "Check the input's size before decoding it, against RunPod's limits (10 MB on /run, 20 MB on "
        "/runsync; use the stricter), and answer PAYLOAD_TOO_LARGE with the limit in the message.",
    ),
    Rule(
        "payload-limit-too-high",
        H,
        _PL,
        PAYLOAD_VALIDATION,
        "The payload limit is above RunPod's",
        "Use 10 MB (the /run limit) or at most 20 MB (/runsync): RunPod rejects larger requests anyway, "
        "and a higher limit hides that from the error message.",
    ),
    # Performance
    Rule(
        "setup-in-handler",
        C,
        _PERF,
        SETUP_TIMING,
        "Heavy setup runs inside the handler",
        "Load models and prepare the environment once at container start, before `runpod.serverless.start` "
        "(under the main guard): the first job otherwise pays it and times out.",
    ),
    Rule(
        "runtime-install",
        C,
        _PERF,
        NO_INSTALLS,
        "Packages are installed at run time",
        "Install dependencies in the image (Dockerfile / requirements), never with pip or a shell at run "
        "time: every cold start pays it and a registry outage breaks the worker.",
    ),
    Rule(
        "no-memory-cleanup",
        H,
        _PERF,
        MEMORY_CLEANUP,
        "No resource cleanup or memory monitoring per job",
        "After each job free per-job objects (`gc.collect()`, `torch.cuda.empty_cache()` past a threshold) "
        "and track memory (RSS, CUDA); recycle the worker past a ceiling.",
    ),
    Rule(
        "blocking-in-async",
        H,
        _PERF,
        SETUP_TIMING,
        "A blocking call inside an async handler",
        "Use the async equivalent (`await asyncio.sleep`, aiohttp/httpx) or `await asyncio.to_thread(...)`: "
        "a blocking call stalls every concurrent job.",
    ),
    Rule(
        "setup-at-import",
        L,
        _PERF,
        SETUP_TIMING,
        "Models load when the module is imported",
        "Do heavy setup in a function called under the main guard: importing the handler (tests, tools, "
        "schema export) should not load weights.",
    ),
    Rule(
        "async-without-concurrency",
        L,
        _PERF,
        SETUP_TIMING,
        "Async handler without a `concurrency_modifier`",
        'Pass `"concurrency_modifier": lambda current: N` to `start()`; without it jobs still run one at a time.',
    ),
    Rule(
        "subprocess",
        L,
        _PERF,
        NO_INSTALLS,
        "The worker runs external commands",
        "Prefer a Python API; if a command is needed, bound it with a timeout and check its exit status.",
    ),
    # Dynamic (--run)
    Rule(
        "run-test-input",
        C,
        _LT,
        RUN_TEST_INPUT,
        "`--test_input` run failed",
        "Run `python <handler> --test_input '<job>'` and fix what it prints; RunPod's local test must pass.",
    ),
    Rule(
        "run-local-api",
        C,
        _LT,
        RUN_LOCAL_API,
        "The local API server did not answer the test job",
        "Run `python <handler> --rp_serve_api --rp_api_port 8000` and POST the job to /runsync; fix the start "
        "or the answer it gives.",
    ),
    Rule(
        "run-test-job-failed",
        C,
        _IO,
        RUN_LOCAL_API,
        "The test job was answered with an error",
        "The handler refuses or fails its own test job: fix the handler, or the test job, until it completes.",
    ),
    Rule(
        "run-oversize",
        C,
        _PL,
        RUN_OVERSIZE,
        "An oversized payload was not refused with a size error",
        "Check the payload size first thing in the handler and answer PAYLOAD_TOO_LARGE.",
    ),
    Rule(
        "run-malformed",
        H,
        _ERR,
        RUN_MALFORMED,
        "A malformed payload made the handler fail badly",
        "Validate the input (types, required keys) before any work and answer a structured error, never an exception.",
    ),
    Rule(
        "run-lazy-setup",
        C,
        _PERF,
        RUN_COLD_START,
        "The first job is much slower than the next ones",
        "The first job pays setup that belongs before `runpod.serverless.start`: load and warm up at start.",
    ),
    Rule(
        "run-slow-cold-start",
        H,
        _PERF,
        RUN_COLD_START,
        "Cold start is over the limit",
        "Shorten start-up: preload only what is served, cache weights on a network volume, avoid run-time "
        "downloads; raise --max-cold-start if this is expected.",
    ),
)

RULES: dict[str, Rule] = {r.id: r for r in _RULES}


def rule(rule_id: str) -> Rule:
    """The catalogue entry for an id; KeyError names the unknown id."""
    return RULES[rule_id]
