"""`make bench`: run every benchmark, print their tables, and put them in README.md.

    python -m benchmarks [--quick]

Each benchmark runs in its own process (cold start measures processes anyway, and one
benchmark's warm caches must not flatter the next) and writes JSON to bench-results/.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from benchmarks.report import machine

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
BENCHMARKS = {  # module: (full arguments, --quick arguments)
    "overhead": (["--repeats", "200"], ["--repeats", "30"]),
    "adapters": (["--repeats", "200"], ["--repeats", "30"]),
    "preprocess": (["--repeats", "50"], ["--repeats", "10"]),
    "batching": (["--rounds", "20"], ["--rounds", "5"]),
    "cold_start": (["--runs", "5"], ["--runs", "2"]),
    "tooling": (["--repeats", "10"], ["--repeats", "3"]),
    "batch": (["--images", "300"], ["--images", "40", "--cli-images", "2"]),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run, not for the README)")
    args = parser.parse_args()
    tables = []
    for name, (full, quick) in BENCHMARKS.items():
        print(f"== benchmarks.{name}", flush=True)
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
        print(text + "\n", flush=True)
        tables.append(text)
    if not args.quick:
        readme = ROOT / "README.md"
        body = readme.read_text()
        head, rest = body.split(START, 1)
        _, tail = rest.split(END, 1)
        section = "\n\n".join(f"{t.splitlines()[0]}\n\n" + "\n".join(t.splitlines()[1:]) for t in tables)
        readme.write_text(f"{head}{START}\nMeasured by `make bench` on {machine()}.\n\n{section}\n{END}{tail}")
        print("README.md benchmark section updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
