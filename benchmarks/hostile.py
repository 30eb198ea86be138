"""The hostile corpus (tests/fixtures/hostile.py) through RunPod's local API: per case the code, the
worker's handler time and its peak RSS growth, against each case's bounds.

    python -m benchmarks.hostile [--cases name,name]

Handler ms is the worker's own duration_ms for the job (its job.done log line); peak RSS growth is
the worker's VmHWM after the job minus its RSS before (the peak is reset per case through
/proc/<pid>/clear_refs). The ratio column is handler time over the same worker's time for a plain
one-digit job measured in this run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.report import save, table
from fastbackend.local import serve_api

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the corpus lives with the tests

from fixtures.hostile import CASES, encode_body, plain_png_digit, run_case  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", default="", help="comma list of case names (default: all)")
    parser.add_argument("--models", default="models")
    args = parser.parse_args()
    wanted = set(filter(None, args.cases.split(",")))
    cases = [c for c in CASES if not wanted or c.name in wanted]
    models = Path(args.models).resolve()
    env = {"FASTBACKEND_BASE_MODEL": str(models / "base"), "FASTBACKEND_ADAPTERS_DIR": str(models / "adapters")}
    plain = next(c for c in CASES if c.make is plain_png_digit)
    rows, record = [], {}
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "worker.log"
        with serve_api(Path.cwd(), env=env, log_file=log) as api:
            baseline = statistics.median(run_case(api.url, None, log, plain).handler_ms for _ in range(5))
            for case in cases:
                body = encode_body(case.make())  # built before the clock and the RSS baseline
                out = run_case(api.url, api.pid, log, case, body)
                served_after = run_case(api.url, None, None, plain).code == "success"
                ok = out.code == case.code and served_after
                within = (out.handler_ms or 0) <= case.max_ms and (out.rss_growth_mb or 0) <= case.max_rss_mb
                rows.append(
                    (
                        case.name,
                        f"{len(body) / 1000:,.0f}",
                        out.code,
                        "yes" if ok else f"NO (expected {case.code})",
                        out.handler_ms,
                        f"{(out.handler_ms or 0) / baseline:.1f}x",
                        out.rss_growth_mb,
                        "yes" if within else f"NO ({case.max_ms:.0f} ms, {case.max_rss_mb:.0f} MB)",
                    )
                )
                record[case.name] = {
                    "code": out.code,
                    "expected": case.code,
                    "handler_ms": out.handler_ms,
                    "rss_growth_mb": out.rss_growth_mb,
                    "body_kb": round(len(body) / 1000, 1),
                }
    print(
        table(
            f"Hostile corpus through the local API (plain job: {baseline:.1f} ms)",
            ["case", "body KB", "code", "as expected", "handler ms", "vs plain", "peak RSS +MB", "within bounds"],
            rows,
        )
    )
    print(f"saved {save('hostile', {'plain_job_ms': baseline, 'cases': record})}")


if __name__ == "__main__":
    main()
