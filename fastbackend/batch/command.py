"""`fastbackend batch`: its arguments and the call into the engine (fastbackend/batch/engine.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _usage(message: str) -> int:
    print(f"fastbackend batch: error: {message}", file=sys.stderr)
    return 2


def add_batch_parser(sub) -> None:
    batch = sub.add_parser(
        "batch",
        help="score a dataset (image folder or manifest) on a RunPod endpoint or a local API, resumably",
        description="Score every image of DATASET (a folder with one subfolder per class, or a .csv/.jsonl "
        "manifest) into --out, one JSON line per image (a result or a coded failure). A rerun sends "
        "only the images not yet in --out. Exit status: 0 all scored, 1 some failed, 2 refused, 130 interrupted.",
    )
    batch.add_argument(
        "dataset", help="image folder, .csv/.jsonl manifest (path,label[,split]) or a COCO .json file (its images)"
    )
    batch_where = batch.add_mutually_exclusive_group(required=True)
    batch_where.add_argument("--endpoint", metavar="ID", help="RunPod endpoint id (API key from $RUNPOD_API_KEY)")
    batch_where.add_argument("--local", metavar="URL", help="a running local API, e.g. http://127.0.0.1:8000")
    batch.add_argument("--out", required=True, metavar="FILE", help="results, JSON lines (appended; resumable)")
    batch.add_argument("--csv", metavar="FILE", help="also write the results as CSV at the end")
    batch.add_argument("--adapter", help="adapter name (default: the base model)")
    batch.add_argument("--top-k", type=int, default=1, help="ranked labels recorded per image (default 1)")
    batch.add_argument(
        "--op", choices=("predict", "embed"), default="predict", help="embed: one vector per image (default predict)"
    )
    batch.add_argument("--npy", metavar="FILE", help="with --op embed: also the vectors as one (N, D) float32 .npy")
    batch.add_argument(
        "--threshold",
        type=float,
        metavar="T",
        help="an object detector: keep detections scoring above T (sent instead of --top-k; the pipeline's 0.5)",
    )
    batch.add_argument("--max-detections", type=int, metavar="N", help="an object detector: at most N per image")
    batch.add_argument(
        "--coco-results",
        metavar="FILE",
        help="with a COCO .json dataset: also the detections as COCO results JSON (float boxes), for pycocotools",
    )
    batch.add_argument("--split", help="only this split of a manifest")
    batch.add_argument(
        "--allow-outside",
        action="store_true",
        help="accept manifest rows outside the manifest's folder (a train run's split.csv lists the dataset's files)",
    )
    batch.add_argument("--concurrency", type=int, default=4, help="jobs in flight at once (default 4)")
    batch.add_argument("--batch-size", type=int, default=16, help="images per job, at most (default 16)")
    batch.add_argument(
        "--by-reference",
        action="store_true",
        help="send {path: ...} items instead of image bytes (the worker reads them under FASTBACKEND_INPUT_ROOT)",
    )
    batch.add_argument(
        "--remote-root",
        metavar="DIR",
        help="with --by-reference: the dataset folder as the worker sees it, e.g. /runpod-volume/data",
    )
    batch.add_argument("--job-timeout", type=float, default=600, metavar="S", help="cancel and retry after S s")
    batch.add_argument("--max-attempts", type=int, default=5, help="tries per job before its images are failed")
    batch.add_argument("--retry-failed", action="store_true", help="send again the images recorded as failed")
    batch.add_argument("--no-progress", action="store_true", help="no progress bar")
    batch.set_defaults(func=cmd_batch)


def cmd_batch(args: argparse.Namespace) -> int:
    from fastbackend.batch.engine import EXIT_REFUSED, BatchOptions, exit_code, run_batch
    from fastbackend.batch.results import ResultsError
    from fastbackend.batch.runner import RetryPolicy
    from fastbackend.client import ClientError, target_from
    from worker.datasets import DatasetError

    if args.npy and args.op != "embed":
        return _usage("--npy needs --op embed")
    detecting = args.threshold is not None or args.max_detections is not None or args.coco_results
    if detecting and args.op != "predict":
        return _usage("--threshold, --max-detections and --coco-results are for predict on an object detector")
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        return _usage("--threshold must be within [0, 1]")
    if args.max_detections is not None and args.max_detections < 1:
        return _usage("--max-detections must be >= 1")
    detection = None
    if detecting:
        detection = {"threshold": 0.5 if args.threshold is None else args.threshold}
        if args.max_detections is not None:
            detection["max_detections"] = args.max_detections
        if args.coco_results:
            detection["float_boxes"] = True  # mAP wants the boxes unrounded
    if args.remote_root and not args.by_reference:
        return _usage("--remote-root needs --by-reference")
    if min(args.concurrency, args.batch_size, args.max_attempts, args.top_k) < 1:
        return _usage("--concurrency, --batch-size, --max-attempts and --top-k must be >= 1")
    try:
        target = target_from(args.endpoint, args.local)
        options = BatchOptions(
            dataset=Path(args.dataset),
            out=Path(args.out),
            target=target,
            adapter=args.adapter,
            top_k=args.top_k,
            op=args.op,
            npy=Path(args.npy) if args.npy else None,
            detection=detection,
            coco_results=Path(args.coco_results) if args.coco_results else None,
            concurrency=args.concurrency,
            batch_size=args.batch_size,
            by_reference=args.by_reference,
            remote_root=args.remote_root,
            split=args.split,
            allow_outside=args.allow_outside,
            retry_failed=args.retry_failed,
            csv=Path(args.csv) if args.csv else None,
            progress=not args.no_progress,
            retry=RetryPolicy(max_attempts=args.max_attempts, job_timeout_s=args.job_timeout),
        )
        summary = run_batch(options)
    except (ClientError, DatasetError, ResultsError, ValueError) as exc:
        print(f"error: {str(exc).replace('allow_outside=True', '--allow-outside')}", file=sys.stderr)
        return EXIT_REFUSED
    for line in summary.lines():
        print(line, file=sys.stderr)
    return exit_code(summary)
