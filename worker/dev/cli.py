"""The `fastbackend` command: parses arguments and calls one function per command."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Libraries the dev tools drive must stay offline and quiet on a pod or a laptop alike.
QUIET_ENV = {"NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def _root() -> Path:
    return Path.cwd()


def cmd_run(args: argparse.Namespace) -> int:
    from worker.dev.mainjob import main_job

    return main_job(_root(), Path(args.models).resolve(), rebuild=args.rebuild)


def cmd_export(args: argparse.Namespace) -> int:
    from worker.dev.export import ExportError, export, stale_diff

    try:
        if args.check:
            diff = stale_diff(_root())
            if diff:
                sys.stdout.write(diff)
                print("\nexported/ is out of date with notebooks/: run `fastbackend export`", file=sys.stderr)
                return 1
            print("exported/ is in sync with notebooks/")
            return 0
        for name in export(_root()):
            print(f"exported/{name}")
        return 0
    except ExportError as exc:
        print(f"export error: {exc}", file=sys.stderr)
        return 2


def cmd_refresh(args: argparse.Namespace) -> int:
    from worker.dev.notebooks import refresh

    notebooks = [Path(p) for p in args.notebooks] or sorted(Path("notebooks").glob("*.ipynb"))
    refresh(notebooks, _root())
    for path in notebooks:
        print(f"refreshed {path}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from worker.dev.check import CheckOptions, run_command

    return run_command(CheckOptions(
        path=Path(args.path), run=args.run, input=args.input, json=args.json, strict=args.strict,
        output=Path(args.output) if args.output else None, summary=args.summary, timeout_s=args.timeout,
        max_cold_start_s=args.max_cold_start, python=args.python,
    ))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastbackend", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="the main job: models, notebooks, summary")
    run.add_argument("--models", default="models", help="models folder (default: models)")
    run.add_argument("--rebuild", action="store_true", help="rebuild the demo models even if present")
    run.set_defaults(func=cmd_run)

    export = sub.add_parser("export", help="notebooks -> exported/ modules and handler")
    export.add_argument("--check", action="store_true", help="fail with a diff if exported/ is stale")
    export.set_defaults(func=cmd_export)

    refresh = sub.add_parser("refresh", help="re-execute notebooks in place and strip volatile metadata")
    refresh.add_argument("notebooks", nargs="*", help="default: notebooks/*.ipynb")
    refresh.set_defaults(func=cmd_refresh)

    check = sub.add_parser("check", help="RunPod compliance review of a handler module (Markdown or JSON)",
                           description="Review a RunPod handler module: static analysis of it and the project "
                           "code it imports; with --run, also execute it as RunPod's local tooling does. Exit "
                           "status: 0 pass, 1 a critical item fails (--strict: any item), 2 cannot review.")
    check.add_argument("path", nargs="?", default="exported/handler.py", help="default: exported/handler.py")
    check.add_argument("--run", action="store_true",
                       help="also execute it: --test_input, local API /runsync and /run, oversized and malformed "
                       "payloads, cold start and warm latency")
    check.add_argument("--input", metavar="JOB", help="test job for --run: JSON or a file (default: "
                       "<handler>.test_input.json or test_input.json beside the handler, then the project root)")
    check.add_argument("--json", action="store_true", help="write the report as JSON instead of Markdown")
    check.add_argument("--strict", action="store_true", help="fail on high and low findings too")
    check.add_argument("--output", "-o", metavar="FILE", help="write the report to FILE; print one summary line")
    check.add_argument("--summary", action="store_true", help="print only the summary line (score, verdict, counts)")
    check.add_argument("--timeout", type=float, default=180.0, metavar="S",
                       help="--run: seconds to wait for the worker to start or answer (default 180)")
    check.add_argument("--max-cold-start", type=float, default=60.0, metavar="S",
                       help="--run: cold start above this is a finding (default 60)")
    check.add_argument("--python", default=sys.executable, help="--run: interpreter for the handler (default: this one)")
    check.set_defaults(func=cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
