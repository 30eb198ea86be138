"""`fastbackend invoke`: predict (or embed) image files on a deployed endpoint, a local API, or locally.

The job carries the served task's own fields as flags (fastbackend/task_flags.py: `--top-k`,
`--candidate-labels`, `--threshold`, `--normalize` ...); the answer is shown as a table of the task's
kind (ranked labels, labelled regions or boxes, embedding sizes), or as JSON with `--json`.

Without a target the exported handler is started once under RunPod's local API
(`--rp_serve_api` on a free loopback port), sent the job on `/runsync`, and stopped. Not
`--test_input`: the job would be one command-line argument, and Linux caps one at 128 KiB (an
ordinary 100 KB JPEG is over it in base64), and RunPod's logger cuts the result line at 4,096
characters.

Exit codes: 0 the job completed; 1 the job failed or the service answered with an error;
2 refused before sending (a body over RunPod's limit, no API key, an unreadable file).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from fastbackend.client import ApiClient, ClientError, JobResult, Mode, PayloadTooLarge, Target
from fastbackend.display import ProgressLine, answer_table, job_summary
from worker.config import RUN_LIMIT_BYTES, RUNSYNC_LIMIT_BYTES

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2


def invoke_files(
    images: Sequence[Path],
    target: Target | None,
    mode: Mode = Mode.SYNC,
    *,
    adapter: str | None = None,
    op: str = "predict",
    fields: dict[str, Any] | None = None,
    max_wait: float = 600,
    as_json: bool = False,
    root: Path | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Send image files as one `predict` (or `embed`) job and print the answer's table (or the raw output).

    Args:
        images: PNG or JPEG files, sent base64-encoded in one job.
        target: an endpoint or a local API; None starts the handler under the local API once.
        mode: `/runsync` or `/run` + `/status` polling (API targets only).
        adapter: the job's `adapter` (None: the base model).
        op: "predict" (the served task's answer) or "embed" (one vector per image).
        fields: the task's request fields to send (`top_k`, `candidate_labels`, `threshold` ...).
        max_wait: seconds to wait for the job to end before giving up (and cancelling it).
        as_json: print the worker's output as JSON instead of the table.
        root: the repository root, for the local run.
        out, err: where the table and the progress/errors go (stdout/stderr by default).

    Returns:
        An exit code: EXIT_OK, EXIT_FAILED or EXIT_REFUSED.
    """
    from fastbackend.local import build_payload

    out, err = out or sys.stdout, err or sys.stderr
    missing = [str(p) for p in images if not Path(p).is_file()]
    if missing:
        print(f"error: no such image file: {', '.join(missing)}", file=err)
        return EXIT_REFUSED
    job = build_payload([Path(p) for p in images], adapter=adapter, top_k=None, op=op, fields=fields)

    if target is None:
        return _invoke_locally(images, job, root or Path.cwd(), max_wait, as_json, out, err)
    return _send(images, job, ApiClient(target), mode, max_wait, as_json, out, err)


def _invoke_locally(
    images: Sequence[Path], job: dict, root: Path, max_wait: float, as_json: bool, out: TextIO, err: TextIO
) -> int:
    """The exported handler under RunPod's local API, for this one job."""
    from fastbackend.local import serve_api

    print("starting the exported handler under RunPod's local API (--rp_serve_api) ...", file=err, flush=True)
    try:
        with serve_api(root, startup_timeout=max_wait) as api:
            return _send(images, job, api, Mode.SYNC, max_wait, as_json, out, err)
    except RuntimeError as exc:  # the handler did not start: its setup's one line is in the log tail
        print(f"error: {exc}", file=err)
        return EXIT_FAILED


def _send(
    images: Sequence[Path],
    job: dict,
    client: ApiClient,
    mode: Mode,
    max_wait: float,
    as_json: bool,
    out: TextIO,
    err: TextIO,
) -> int:
    progress = ProgressLine(err, client.target.label)
    try:
        result = client.invoke(job, mode, max_wait=max_wait, progress=progress)
    except PayloadTooLarge as exc:
        print(f"refused, nothing sent: {exc}", file=err)
        return EXIT_REFUSED
    except ClientError as exc:
        progress.close()
        print(f"error: {exc}", file=err)
        return EXIT_FAILED
    progress.close()
    return _show(images, result.output, result.error or _not_completed(result), result, as_json, out, err, mode)


def _not_completed(result: JobResult) -> str | None:
    return None if result.status == "COMPLETED" else f"job ended {result.status}"


def _show(
    images: Sequence[Path],
    output: object,
    error: str | None,
    result: JobResult | None,
    as_json: bool,
    out: TextIO,
    err: TextIO,
    mode: Mode = Mode.SYNC,
) -> int:
    if error:
        print(f"error: {error}", file=err)
        if error.startswith("PAYLOAD_TOO_LARGE") and result is not None and result.request_bytes > RUN_LIMIT_BYTES:
            # RunPod took the body (/runsync allows 20 MB); the worker's own limit is lower.
            print(
                f"hint: the worker accepts {RUN_LIMIT_BYTES:,} bytes by default: set FASTBACKEND_MAX_PAYLOAD_BYTES "
                f"(up to {RUNSYNC_LIMIT_BYTES}) on the endpoint, or send fewer images per call",
                file=err,
            )
        return EXIT_FAILED
    if not isinstance(output, dict) or not ("predictions" in output or "embeddings" in output):
        print(f"error: unexpected output: {str(output)[:500]}", file=err)
        return EXIT_FAILED
    if as_json:
        print(json.dumps(output, indent=2), file=out)
    else:
        print(answer_table([str(p) for p in images], output), file=out)
    if result is not None:
        print(
            job_summary(result.job_id, mode.route, result.request_bytes, result.elapsed_s, dict(result.raw)), file=err
        )
    return EXIT_OK
