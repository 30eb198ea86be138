"""`make bench`: run every benchmark, print their tables, and put them in docs/benchmarks.md.

    python -m benchmarks [--quick]

Each benchmark runs in its own process (cold start measures processes anyway, and one
benchmark's warm caches must not flatter the next) and writes JSON to bench-results/.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.report import machine

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_PAGE = "docs/benchmarks.md"  # the site's Benchmarks page; README links to it, never holds its tables
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
BENCHMARKS = {  # module: (full arguments, --quick arguments)
    "overhead": (["--repeats", "200"], ["--repeats", "30"]),
    "adapters": (["--repeats", "200"], ["--repeats", "30"]),
    "preprocess": (["--repeats", "50"], ["--repeats", "10"]),
    "batching": (["--rounds", "20"], ["--rounds", "5"]),
    "many_adapters": (
        ["--jobs", "2000"],
        ["--jobs", "200", "--repeats", "1", "--base-jobs", "8", "--setup-folders", "1000"],
    ),
    "cold_start": (["--runs", "5", "--vit-runs", "5"], ["--runs", "1", "--vit-runs", "1"]),
    "realsize": (["--repeats", "2"], ["--quick"]),  # one repeat is ~7 min of a busy 2-core machine
    "embedded": (["--repeats", "300"], ["--repeats", "30"]),
    "gpu": (["--repeats", "5"], ["--repeats", "1"]),
    "tooling": (["--repeats", "10"], ["--repeats", "3"]),
    "production": (["--jobs", "2000"], ["--jobs", "200"]),
    "batch": (["--images", "300"], ["--images", "40", "--cli-images", "2"]),
    "embed": (["--repeats", "3"], ["--quick"]),
    "detection": (["--repeats", "5"], ["--quick"]),
    "zero_shot": (["--repeats", "5"], ["--quick"]),
    "segmentation": (["--repeats", "3"], ["--repeats", "1"]),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="fewer repeats (a smoke run that leaves docs/benchmarks.md alone)"
    )
    args = parser.parse_args()
    tables = []
    for name, (full, quick) in BENCHMARKS.items():
        print(f"== benchmarks.{name}", flush=True)
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", f"benchmarks.{name}", *(quick if args.quick else full)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            print(done.stdout + done.stderr, file=sys.stderr)
            return done.returncode
        text = "\n".join(line for line in done.stdout.splitlines() if not line.startswith("saved "))
        print(f"{text}\n({time.perf_counter() - start:.0f} s)\n", flush=True)  # to size the repeats to the machine
        tables.append(text)
    if not args.quick:
        page = ROOT / BENCHMARKS_PAGE
        body = page.read_text()
        head, rest = body.split(START, 1)
        _, tail = rest.split(END, 1)
        # A benchmark may print several tables, one per paragraph: a blank line after each title.
        paragraphs = [p for t in tables for p in t.split("\n\n") if p.strip()]
        section = "\n\n".join(f"{p.splitlines()[0]}\n\n" + "\n".join(p.splitlines()[1:]) for p in paragraphs)
        page.write_text(f"{head}{START}\nMeasured by `make bench` on {machine()}.\n\n{section}\n{END}{tail}")
        print(f"{BENCHMARKS_PAGE} updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
