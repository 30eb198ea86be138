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
    return parser


def main(argv: list[str] | None = None) -> int:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
