"""`fastbackend pipeline list|show|run`: the commands, their arguments, and how their errors print."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def pipeline_errors(func):
    """Pipeline commands answer a refused definition or parameter with its message, not a traceback."""

    def wrapped(args: argparse.Namespace) -> int:
        from fastbackend.pipeline.errors import PipelineError

        try:
            return func(args)
        except PipelineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt:
            print("interrupted; the partial notebook and run.json are in the run folder", file=sys.stderr)
            return 130

    return wrapped


@pipeline_errors
def cmd_pipeline_list(args: argparse.Namespace) -> int:
    from fastbackend.pipeline.definitions import load_definitions
    from fastbackend.pipeline.summary import pipeline_list

    print(pipeline_list(load_definitions(Path(args.pipelines))))
    return 0


@pipeline_errors
def cmd_pipeline_show(args: argparse.Namespace) -> int:
    from fastbackend.pipeline.definitions import load_definitions
    from fastbackend.pipeline.summary import pipeline_help

    print(pipeline_help(load_definitions(Path(args.pipelines)), args.name))
    return 0


@pipeline_errors
def cmd_pipeline_run(args: argparse.Namespace) -> int:
    from fastbackend.pipeline.runner import report, run_pipeline

    run = run_pipeline(
        args.name,
        pipelines_file=Path(args.pipelines),
        assignments=args.param,
        params_files=args.params_file,
        jobs=args.jobs,
        runs_dir=Path(args.runs_dir) if args.runs_dir else None,
        progress=False if args.no_progress else None,
        fail_fast=args.fail_fast,
        command=["fastbackend", *sys.argv[1:]],
    )
    print()
    print(report(run))
    return 0 if run.ok else 1


def add_pipeline_parser(sub) -> None:
    """`fastbackend pipeline list|show|run`."""
    pipeline = sub.add_parser("pipeline", help="run the notebooks as parameterised pipelines (pipelines.yaml)")
    definitions = argparse.ArgumentParser(add_help=False)
    definitions.add_argument("--pipelines", default="pipelines.yaml", help="definitions file (default: pipelines.yaml)")
    psub = pipeline.add_subparsers(dest="pipeline_command", required=True)
    psub.add_parser("list", parents=[definitions], help="the pipelines and their steps").set_defaults(
        func=cmd_pipeline_list
    )
    show = psub.add_parser("show", parents=[definitions], help="every parameter of a pipeline: type, default, origin")
    show.add_argument("name", help="a pipeline named in the definitions file (`pipeline list`)")
    show.set_defaults(func=cmd_pipeline_show)
    prun = psub.add_parser(
        "run", parents=[definitions], help="run a pipeline (or a sweep) into runs/<utc-time>-<name>/"
    )
    prun.add_argument("name", help="a pipeline named in the definitions file (`pipeline list`)")
    prun.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a parameter (step.NAME=VALUE for one step); v1,v2,v3 sweeps; repeatable",
    )
    prun.add_argument(
        "-f",
        "--params-file",
        action="append",
        default=[],
        metavar="FILE",
        help="YAML file of NAME: value (a list sweeps); repeatable, -p wins",
    )
    prun.add_argument("-j", "--jobs", type=int, default=1, help="sweep runs at once, one process each (default 1)")
    prun.add_argument("--fail-fast", action="store_true", help="in a sweep, start no run after one failed")
    prun.add_argument("--no-progress", action="store_true", help="no progress bar (step lines still print)")
    prun.add_argument("--runs-dir", help="where run folders go (default: runs/ beside the definitions file)")
    prun.set_defaults(func=cmd_pipeline_run)
