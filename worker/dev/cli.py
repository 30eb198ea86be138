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


def cmd_schema(args: argparse.Namespace) -> int:
    import json

    from worker.schema import json_schema

    text = json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
    if args.check:
        if Path(args.output).read_text() != text:
            print(f"{args.output} is stale: run `fastbackend schema --write`", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
    elif args.write:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import subprocess

    from worker.dev.local import HANDLER_MODULE, handler_env

    command = [sys.executable, "-m", HANDLER_MODULE, "--rp_serve_api", "--rp_api_host", args.host,
               "--rp_api_port", str(args.port)]
    print(f"serving RunPod's local API on http://{args.host}:{args.port} (POST /runsync, /run, /status/<id>)")
    return subprocess.call(command, cwd=_root(), env=handler_env())


def cmd_invoke(args: argparse.Namespace) -> int:
    from worker.dev.client import API_KEY_ENV_VAR, BASE_URL_ENV_VAR, ClientError, Mode, Target
    from worker.dev.invoke import EXIT_REFUSED, invoke_files

    try:
        if args.endpoint:
            target = Target.endpoint(args.endpoint, os.environ.get(API_KEY_ENV_VAR, ""), os.environ.get(BASE_URL_ENV_VAR))
        else:
            target = Target.local(args.local) if args.local else None
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    mode = Mode.ASYNC if args.async_ else Mode.SYNC
    return invoke_files([Path(p) for p in args.images], target, mode, adapter=args.adapter, top_k=args.top_k,
                        max_wait=args.timeout, as_json=args.json, root=_root())


def cmd_bake(args: argparse.Namespace) -> int:
    from worker.dev.bake import BakeError, bake

    try:
        base, adapters, names = bake(args.base_model, args.adapters, _root(), Path(args.output))
    except BakeError as exc:
        print(f"bake error: {exc}", file=sys.stderr)
        return 2
    print(f"baked into {args.output}: base from {base.kind} {base.location}".rstrip()
          + f"; adapters from {adapters.kind} {adapters.location}".rstrip() + f": {', '.join(names) or 'none'}")
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
    schema = sub.add_parser("schema", help="the job input JSON Schema")
    schema.add_argument("--output", default="schema/input.json")
    mode = schema.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write it to --output")
    mode.add_argument("--check", action="store_true", help="fail if --output is stale")
    schema.set_defaults(func=cmd_schema)

    serve = sub.add_parser("serve", help="run the handler under RunPod's local API (--rp_serve_api)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(func=cmd_serve)

    bake = sub.add_parser("bake", help="put the base model and adapters in a folder for the image (Dockerfile)")
    bake.add_argument("--base-model", default="models/base",
                      help="a folder in this repository or a hub id (default: models/base, built if missing)")
    bake.add_argument("--adapters", default="models/adapters",
                      help="a folder in this repository or 'none' (default: models/adapters, built if missing)")
    bake.add_argument("--output", required=True, help="an empty or new folder, e.g. /models")
    bake.set_defaults(func=cmd_bake)

    invoke = sub.add_parser(
        "invoke", help="predict image files: on a RunPod endpoint, a local API, or with --test_input",
        description="Send image files as one predict job and print the predictions. Without --endpoint or "
                    "--local the handler runs once with --test_input. Request bodies are checked "
                    "against RunPod's limits before sending: 10 MB on /run (--async), 20 MB on /runsync.")
    invoke.add_argument("images", nargs="+", help="PNG or JPEG files")
    invoke.add_argument("--adapter", help="adapter name (default: the base model)")
    invoke.add_argument("--top-k", type=int, default=3)
    where = invoke.add_mutually_exclusive_group()
    where.add_argument("--endpoint", metavar="ID", help="a RunPod Serverless endpoint id (API key from $RUNPOD_API_KEY)")
    where.add_argument("--local", metavar="URL", help="a running local API, e.g. http://127.0.0.1:8000")
    how = invoke.add_mutually_exclusive_group()
    how.add_argument("--sync", action="store_true", help="POST /runsync and wait in the request (default)")
    how.add_argument("--async", dest="async_", action="store_true",
                     help="POST /run, then poll /status with a progress line")
    invoke.add_argument("--timeout", type=float, default=600, metavar="S",
                        help="seconds to wait for the job before giving up and cancelling it (default 600)")
    invoke.add_argument("--json", action="store_true", help="print the raw output")
    invoke.set_defaults(func=cmd_invoke)
    return parser


def main(argv: list[str] | None = None) -> int:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "invoke" and args.async_ and not (args.endpoint or args.local):
        parser.error("--async needs --endpoint or --local (without them the handler runs once with --test_input)")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
