"""The `fastbackend` command: parses arguments and calls one function per command."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fastbackend.pipeline.command import add_pipeline_parser, pipeline_errors
from worker.config import ENV_VARS
from worker.environment import quiet_environment


def _root() -> Path:
    return Path.cwd()


@pipeline_errors
def cmd_run(args: argparse.Namespace) -> int:
    from fastbackend.mainjob import main_job

    return main_job(_root(), Path(args.models).resolve(), rebuild=args.rebuild)


def cmd_export(args: argparse.Namespace) -> int:
    from fastbackend.export import ExportError, export, stale_diff

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
    from fastbackend.notebooks import RefreshFailed, refresh

    notebooks = [Path(p) for p in args.notebooks] or sorted(Path("notebooks").glob("*.ipynb"))
    for path in notebooks:
        try:
            refresh([path], _root())
        except RefreshFailed as exc:
            print(f"refresh failed: {exc}", file=sys.stderr)
            return 1
        print(f"refreshed {path}")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    import json

    from worker.schema import json_schema
    from worker.tasks import DEFAULT_TASK, TASKS

    text = json.dumps(json_schema(TASKS[DEFAULT_TASK].request), indent=2, sort_keys=True) + "\n"
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


def cmd_reference(args: argparse.Namespace) -> int:
    from fastbackend.reference import command

    return command(_root(), check=args.check, build_parser=build_parser)


def cmd_serve(args: argparse.Namespace) -> int:
    from fastbackend.local import HandlerCommand, serve_args

    command = HandlerCommand.exported(_root())
    print(
        f"serving RunPod's local API on http://{args.host}:{args.port} (POST /runsync, /run, /status/<id>)", flush=True
    )
    # Become the worker (exec, not a child): a signal to `fastbackend serve` reaches the server itself.
    os.chdir(command.cwd)
    os.execve(command.argv[0], [*command.argv, *serve_args(args.host, args.port)], dict(command.env))


def cmd_invoke(args: argparse.Namespace) -> int:
    from fastbackend.client import ClientError, Mode, target_from
    from fastbackend.invoke import EXIT_REFUSED, invoke_files
    from fastbackend.task_flags import given_fields

    try:
        target = target_from(args.endpoint, args.local)
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    mode = Mode.ASYNC if args.async_ else Mode.SYNC
    return invoke_files(
        [Path(p) for p in args.images],
        target,
        mode,
        adapter=args.adapter,
        op=args.op,
        fields=given_fields(args),
        max_wait=args.timeout,
        as_json=args.json,
        root=_root(),
    )


def cmd_bake(args: argparse.Namespace) -> int:
    from fastbackend.bake import BakeError, bake

    try:
        base, adapters, names = bake(args.base_model, args.adapters, _root(), Path(args.output))
    except BakeError as exc:
        print(f"bake error: {exc}", file=sys.stderr)
        return 2
    print(
        f"baked into {args.output}: base from {base.kind} {base.location}".rstrip()
        + f"; adapters from {adapters.kind} {adapters.location}".rstrip()
        + f": {', '.join(names) or 'none'}"
    )
    return 0


def cmd_adapters_stamp(args: argparse.Namespace) -> int:
    from fastbackend.adapters import stamp
    from worker.errors import WorkerError

    try:
        meta = stamp(
            args.dir, args.base_model, task=args.task, description=args.description, publish_to=args.publish_to
        )
    except WorkerError as exc:
        print(f"stamp error: {exc}", file=sys.stderr)
        return 1
    where = f", published to {Path(args.publish_to) / Path(args.dir).name}" if args.publish_to else ""
    print(f"stamped {args.dir}: base_fingerprint {meta['base_fingerprint']} ({args.base_model}){where}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from fastbackend.check import CheckOptions, run_command

    return run_command(
        CheckOptions(
            path=Path(args.path),
            run=args.run,
            input=args.input,
            json=args.json,
            strict=args.strict,
            output=Path(args.output) if args.output else None,
            summary=args.summary,
            timeout_s=args.timeout,
            max_cold_start_s=args.max_cold_start,
            python=args.python,
        )
    )


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

    refresh = sub.add_parser(
        "refresh", help="re-execute notebooks, strip volatile metadata; replaced only when they run to the end"
    )
    refresh.add_argument("notebooks", nargs="*", help="default: notebooks/*.ipynb")
    refresh.set_defaults(func=cmd_refresh)

    schema = sub.add_parser("schema", help="the job input JSON Schema")
    schema.add_argument("--output", default="schema/input.json", help="the schema file (default: schema/input.json)")
    mode = schema.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write it to --output")
    mode.add_argument("--check", action="store_true", help="fail if --output is stale")
    schema.set_defaults(func=cmd_schema)

    reference = sub.add_parser(
        "reference",
        help="regenerate the reference generated from the code (docs/reference/, .runpod/hub.json, schema/input.json)",
    )
    reference.add_argument("--check", action="store_true", help="fail naming each stale file; write nothing")
    reference.set_defaults(func=cmd_reference)

    serve = sub.add_parser("serve", help="run the handler under RunPod's local API (--rp_serve_api)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    serve.set_defaults(func=cmd_serve)

    bake = sub.add_parser("bake", help="put the base model and adapters in a folder for the image (Dockerfile)")
    bake.add_argument(
        "--base-model",
        default="models/base",
        help="a folder in this repository or a hub id (default: models/base, built if missing)",
    )
    bake.add_argument(
        "--adapters",
        default="models/adapters",
        help="a folder in this repository or 'none' (default: models/adapters, built if missing)",
    )
    bake.add_argument("--output", required=True, help="an empty or new folder, e.g. /models")
    bake.set_defaults(func=cmd_bake)

    adapters = sub.add_parser("adapters", help="adapters as peft saves them")
    asub = adapters.add_subparsers(dest="adapters_command", required=True)
    stamp = asub.add_parser(
        "stamp",
        help="verify an adapter against the served base, run it once, write its fastbackend.json",
        description="Checks what the worker checks (adapter-name rule, peft's base_model_name_or_path, keys and "
        "shapes, a recorded fingerprint), runs the adapter once, and writes fastbackend.json with the base's "
        "fingerprint. Exit status: 0 stamped, 1 refused (one line naming the file).",
    )
    stamp.add_argument("dir", help="the adapter folder (peft's flat or named layout)")
    stamp.add_argument(
        "--base-model",
        default=os.environ.get(ENV_VARS["base_model"], "models/base"),
        help="a folder or a cached hub id (default: $FASTBACKEND_BASE_MODEL, else models/base)",
    )
    stamp.add_argument(
        "--publish-to",
        metavar="ADAPTERS_DIR",
        help="also publish the stamped copy into a (live) adapters folder: written there under a hidden name, "
        "then renamed to the adapter's name, so running workers never see it half-written",
    )
    stamp.add_argument("--task", default="", help="kept from an existing fastbackend.json when empty")
    stamp.add_argument("--description", default="", help="kept from an existing fastbackend.json when empty")
    stamp.set_defaults(func=cmd_adapters_stamp)

    invoke = sub.add_parser(
        "invoke",
        help="predict or embed image files: on a RunPod endpoint, a local API, or the handler started locally",
        description="Send image files as one predict (or embed) job and print the answer. Without --endpoint or "
        "--local the exported handler is started once under RunPod's local API. Request bodies are checked "
        "against RunPod's limits before sending: 10 MB on /run (--async), 20 MB on /runsync. The task fields "
        "below are every served task's request fields; give only those of the task the worker serves.",
    )
    invoke.add_argument("images", nargs="+", help="PNG or JPEG files")
    invoke.add_argument("--adapter", help="adapter name (default: the base model)")
    invoke.add_argument(
        "--op", choices=("predict", "embed"), default="predict", help="embed: one vector per image (default predict)"
    )
    where = invoke.add_mutually_exclusive_group()
    where.add_argument(
        "--endpoint", metavar="ID", help="a RunPod Serverless endpoint id (API key from $RUNPOD_API_KEY)"
    )
    where.add_argument("--local", metavar="URL", help="a running local API, e.g. http://127.0.0.1:8000")
    how = invoke.add_mutually_exclusive_group()
    how.add_argument("--sync", action="store_true", help="POST /runsync and wait in the request (default)")
    how.add_argument(
        "--async", dest="async_", action="store_true", help="POST /run, then poll /status with a progress line"
    )
    invoke.add_argument(
        "--timeout",
        type=float,
        default=600,
        metavar="S",
        help="seconds to wait for the job before giving up and cancelling it (default 600)",
    )
    invoke.add_argument("--json", action="store_true", help="print the raw output")
    from fastbackend.task_flags import add_task_arguments

    add_task_arguments(invoke)
    invoke.set_defaults(func=cmd_invoke)

    from fastbackend.batch.command import add_batch_parser
    from fastbackend.doctor import add_doctor_parser

    add_batch_parser(sub)
    add_doctor_parser(sub)

    add_pipeline_parser(sub)
    check = sub.add_parser(
        "check",
        help="RunPod compliance review of a handler module (Markdown or JSON)",
        description="Review a RunPod handler module: static analysis of it and the project "
        "code it imports; with --run, also execute it as RunPod's local tooling does. Exit "
        "status: 0 pass, 1 a critical item fails (--strict: any item), 2 cannot review.",
    )
    check.add_argument("path", nargs="?", default="exported/handler.py", help="default: exported/handler.py")
    check.add_argument(
        "--run",
        action="store_true",
        help="also execute it: --test_input, local API /runsync and /run, oversized and malformed "
        "payloads, cold start and warm latency",
    )
    check.add_argument(
        "--input",
        metavar="JOB",
        help="test job for --run: JSON or a file (default: "
        "<handler>.test_input.json or test_input.json beside the handler, then the project root)",
    )
    check.add_argument("--json", action="store_true", help="write the report as JSON instead of Markdown")
    check.add_argument("--strict", action="store_true", help="fail on high and low findings too")
    check.add_argument("--output", "-o", metavar="FILE", help="write the report to FILE; print one summary line")
    check.add_argument("--summary", action="store_true", help="print only the summary line (score, verdict, counts)")
    check.add_argument(
        "--timeout",
        type=float,
        default=180.0,
        metavar="S",
        help="--run: seconds to wait for the worker to start or answer (default 180)",
    )
    check.add_argument(
        "--max-cold-start",
        type=float,
        default=60.0,
        metavar="S",
        help="--run: cold start above this is a finding (default 60)",
    )
    check.add_argument(
        "--python", default=sys.executable, help="--run: interpreter for the handler (default: this one)"
    )
    check.set_defaults(func=cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Libraries the dev tools drive must stay offline and quiet on a pod or a laptop alike.
    quiet_environment()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "invoke" and args.async_ and not (args.endpoint or args.local):
        parser.error("--async needs --endpoint or --local (without them the handler is started once for /runsync)")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
