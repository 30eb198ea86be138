"""`fastbackend batch`: score a whole dataset on a RunPod endpoint (or the local API).

    dataset -> items not yet in the results file -> jobs under the body limit
            -> `concurrency` runner threads (send, follow, retry) -> one writer -> results.jsonl

Every image ends in the results file exactly once, as a result or a coded failure; a rerun
sends only the images not in it. Ctrl-C cancels the jobs in flight (on RunPod) and keeps what
is written. Exit codes: 0 every image of the results file scored, 1 some recorded failed (or
the run was aborted), 2 refused before sending, 130 interrupted.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from fastbackend.batch.coco import coco_images, is_coco, write_coco_results
from fastbackend.batch.plan import NOT_SENT, Item, failure, item_key, pack, plan_items
from fastbackend.batch.results import ResultsFile, write_csv, write_npy
from fastbackend.batch.runner import BatchAborted, Counters, JobRunner, RetryPolicy
from fastbackend.client import ApiClient, Target

EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_INTERRUPTED = 0, 1, 2, 130


@dataclass
class BatchOptions:
    dataset: Path
    out: Path
    target: Target
    adapter: str | None = None
    top_k: int = 1
    op: str = "predict"  # or "embed": one vector per image (records' `embedding`)
    npy: Path | None = None  # with op embed: also the vectors as one (N, D) float32 .npy, in dataset order
    detection: dict[str, Any] | None = None  # a detector's request fields (threshold, ...) instead of top_k
    coco_results: Path | None = None  # a COCO dataset's detections as COCO results JSON, at the end
    concurrency: int = 4
    batch_size: int = 16
    by_reference: bool = False
    remote_root: str | None = None
    split: str | None = None
    allow_outside: bool = False  # manifest rows outside the manifest's folder (a train run's split.csv)
    retry_failed: bool = False
    csv: Path | None = None
    progress: bool = True
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    http_timeout_s: float = 120.0


@dataclass
class BatchSummary:
    total: int = 0  # images in the dataset
    skipped: int = 0  # already in the results file
    to_send: int = 0
    written_ok: int = 0
    written_failed: int = 0
    failed_by_code: collections.Counter = field(default_factory=collections.Counter)
    retries: collections.Counter = field(default_factory=collections.Counter)
    jobs_sent: int = 0
    images_sent: int = 0
    elapsed_s: float = 0.0
    interrupted: bool = False
    aborted: str | None = None
    repaired_bytes: int = 0
    duplicates: list[str] = field(default_factory=list)  # images with more than one line in the file
    lines_in_file: int = 0  # after the run: every image written, by this run or an earlier one
    failed_in_file: int = 0

    @property
    def rate(self) -> float:
        return (self.written_ok + self.written_failed) / self.elapsed_s if self.elapsed_s else 0.0

    def lines(self) -> list[str]:
        done = self.written_ok + self.written_failed
        out = [
            f"{done} of {self.to_send} images written in {self.elapsed_s:.1f} s ({self.rate:.1f} images/s): "
            f"{self.written_ok} scored, {self.written_failed} failed"
            + (f" ({_counts(self.failed_by_code)})" if self.failed_by_code else ""),
            f"sent {self.images_sent} images in {self.jobs_sent} jobs; retries: {sum(self.retries.values())}"
            + (f" ({_counts(self.retries)})" if self.retries else ""),
            f"skipped {self.skipped} already in the results file; dataset {self.total} images; "
            f"results file: {self.lines_in_file} images, {self.failed_in_file} failed"
            + (" (--retry-failed sends them again)" if self.failed_in_file else ""),
        ]
        if self.repaired_bytes:
            out.append(f"cut {self.repaired_bytes} bytes of an unfinished last line (a killed run)")
        if self.duplicates:
            shown = ", ".join(repr(key) for key in self.duplicates[:5]) + (", ..." if len(self.duplicates) > 5 else "")
            out.append(f"{len(self.duplicates)} images have more than one line in the results file: {shown}")
        if self.interrupted:
            out.append("interrupted: jobs in flight cancelled; run the same command again to finish")
        if self.aborted:
            out.append(f"aborted: {self.aborted}")
        return out


def _counts(counter: collections.Counter) -> str:
    return ", ".join(f"{code} {n}" for code, n in counter.most_common())


def run_batch(
    options: BatchOptions,
    err: TextIO | None = None,
    *,
    client: ApiClient | None = None,
    on_written: Callable[[int], None] | None = None,
) -> BatchSummary:
    """Score the dataset into `options.out`; see the module docstring.

    Raises:
        DatasetError: the dataset cannot be read (nothing sent).
        KeyboardInterrupt is handled: the summary says `interrupted`.
    """
    from worker.datasets import DatasetError, load_dataset, skipped_report

    err = err or sys.stderr
    root = options.dataset if options.dataset.is_dir() else options.dataset.parent
    coco_ids: dict[str, int] = {}
    if is_coco(options.dataset):  # a COCO JSON file: its images, each with its id for --coco-results
        files, coco_ids, categories = coco_images(options.dataset)
        entries = [(file, "") for file in files]
    elif options.coco_results:
        raise DatasetError(f"{options.dataset}: --coco-results needs a COCO JSON dataset (its image and category ids)")
    else:
        # Files are not opened here: one unreadable or non-image file becomes that file's coded
        # failure in the results (FILE_UNREADABLE, or the worker's decode error), not a stopped batch.
        dataset = load_dataset(
            options.dataset, split=options.split, check_files=False, allow_outside=options.allow_outside
        )
        if dataset.skipped:
            print(skipped_report(dataset), file=err)
        entries = [(i.path, i.label) for i in dataset.items]
    results = ResultsFile(options.out)
    summary = BatchSummary(
        total=len(entries), repaired_bytes=results.repaired_bytes, duplicates=list(results.duplicates)
    )
    if options.retry_failed:
        print(f"--retry-failed: {results.forget_failures()} failed images will be sent again", file=err)
    items, summary.skipped = plan_items(
        entries,
        root,
        results.done,
        by_reference=options.by_reference,
        remote_root=options.remote_root,
    )
    summary.to_send = len(items)
    jobs, too_large = pack(items, options.batch_size)
    client = client or ApiClient(options.target, timeout=options.http_timeout_s)
    stop = threading.Event()
    counters = Counters()
    runner = JobRunner(
        client,
        options.retry,
        stop,
        adapter=options.adapter,
        top_k=options.top_k,
        op=options.op,
        fields=options.detection,
        counters=counters,
    )
    bar = _progress_bar(options.progress, summary, err)
    started = time.monotonic()

    def write(records: list[dict[str, Any]]) -> None:
        written = results.append(records)
        for row in written:
            if row["code"]:
                summary.written_failed += 1
                summary.failed_by_code[row["code"]] += 1
            else:
                summary.written_ok += 1
        if bar is not None:
            bar.update(len(written))
            bar.set_postfix(failed=summary.written_failed, retries=sum(counters.retries.values()), refresh=False)
        if on_written:
            on_written(len(written))

    write(
        [
            failure(i, NOT_SENT, "over RunPod's body limit alone: send it --by-reference", options.adapter, None, 0)
            for i in too_large
        ]
    )
    in_flight: set[Future] = set()
    pool = ThreadPoolExecutor(options.concurrency, thread_name_prefix="fastbackend-batch")
    try:
        if options.by_reference and jobs:
            jobs = _probe_references(jobs, runner, write)  # BatchAborted: the worker reads neither
        pending = iter(jobs)
        _fill(pool, runner, pending, in_flight, options.concurrency)
        while in_flight:
            finished, _ = wait(in_flight, timeout=0.5, return_when=FIRST_COMPLETED)
            for future in finished:
                in_flight.discard(future)
                write(future.result())  # BatchAborted surfaces here
            _fill(pool, runner, pending, in_flight, options.concurrency)
    except KeyboardInterrupt:
        summary.interrupted = True
    except BatchAborted as exc:
        summary.aborted = str(exc)
    finally:
        stop.set()  # runners cancel their jobs in flight and return what they have
        for future in in_flight:
            try:
                write(future.result())
            except BatchAborted:
                pass
        pool.shutdown(wait=True)
        results.close()
        summary.lines_in_file, summary.failed_in_file = len(results.done), len(results.failed)
        if bar is not None:
            bar.close()
    summary.elapsed_s = time.monotonic() - started
    summary.retries, summary.jobs_sent, summary.images_sent = counters.retries, counters.jobs_sent, counters.images_sent
    if options.csv:
        print(f"wrote {write_csv(options.out, options.csv)} rows to {options.csv}", file=err)
    if options.npy:
        keys = [item_key(path, root) for path, _ in entries]
        print(f"wrote {write_npy(options.out, options.npy, keys)} vectors to {options.npy}", file=err)
    if options.coco_results:
        images, found = write_coco_results(options.out, options.coco_results, coco_ids, categories)
        print(f"wrote {found} detections of {images} images to {options.coco_results} (COCO results)", file=err)
    return summary


# What a worker answers for a path it cannot read; two in a row from the first images means the
# references are wrong (a wrong --remote-root), not the files.
_REFERENCE_CODES = frozenset({"IMAGE_SOURCE_NOT_ALLOWED", "IMAGE_FETCH_FAILED"})


def _probe_references(
    jobs: list[list[Item]], runner: JobRunner, write: Callable[[list[dict[str, Any]]], None]
) -> list[list[Item]]:
    """Send the first two images alone before the rest: when the worker can read neither, stop.

    Otherwise each job with a wrong --remote-root fails one image at a time and sends the rest
    again (about n^2/2 images for n); this costs two images.

    Raises:
        BatchAborted: both probes failed with a source code (their records are written first).
    """
    items = [item for group in jobs for item in group]
    probes, failed = items[:2], []
    for item in probes:
        records = runner.run([item])
        write(records)
        failed += [r for r in records if r["code"] in _REFERENCE_CODES]
    if len(failed) == len(probes) == 2:
        raise BatchAborted(
            f"the worker cannot read the first two images ({failed[0]['error']}); "
            "is --remote-root the dataset folder as the worker sees it?"
        )
    done = {item.key for item in probes}
    return [kept for group in jobs if (kept := [item for item in group if item.key not in done])]


def _fill(pool: ThreadPoolExecutor, runner: JobRunner, pending, in_flight: set[Future], limit: int) -> None:
    """Keep `limit` jobs running: jobs are built (files read) only when their turn comes."""
    while len(in_flight) < limit:
        group: list[Item] | None = next(pending, None)
        if group is None:
            return
        in_flight.add(pool.submit(runner.run, group))


def _progress_bar(enabled: bool, summary: BatchSummary, err: TextIO):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=summary.to_send, unit="img", file=err, dynamic_ncols=True, mininterval=0.5, smoothing=0.1)


def exit_code(summary: BatchSummary) -> int:
    if summary.interrupted:
        return EXIT_INTERRUPTED
    if summary.aborted or summary.failed_in_file:
        return EXIT_FAILED
    return EXIT_OK
