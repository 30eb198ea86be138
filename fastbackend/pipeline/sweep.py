"""Running the planned runs of one invocation: in this process, or in N worker processes.

Runs are independent, so a failed run does not stop the others unless `fail_fast` asks it to;
runs it skips are reported as "skipped". Worker processes are started with `spawn` (a fork of a
process that may already hold a kernel's zmq sockets is not safe) and report progress over a
queue to this process, which owns the display.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

from fastbackend.pipeline.execute import Progress, RunResult, run_plan
from fastbackend.pipeline.plan import RunPlan

# Libraries a notebook imports that size a thread pool to every core by default.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_queue: Any = None  # a worker process's progress queue, set by _init_worker


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def skipped(plan: RunPlan) -> RunResult:
    return RunResult(plan.pipeline, plan.label, plan.point, plan.run_dir, "skipped", 0.0, {}, ())


def _init_worker(queue: Any, threads: int) -> None:
    global _queue
    _queue = queue
    # Kernels inherit this process's environment; N kernels that each size their thread pools to
    # every core would oversubscribe the machine and run slower together than one after another.
    for name in THREAD_ENV_VARS:
        os.environ.setdefault(name, str(threads))


def _run_in_worker(plan: RunPlan, index: int, context: dict[str, Any]) -> RunResult:
    plan.run_dir.mkdir(parents=True, exist_ok=True)  # a single run's folder is the allocated one
    return run_plan(plan, index, _queue.put, context)


def _sequential(
    plans: tuple[RunPlan, ...], progress: Progress | None, fail_fast: bool, context: dict[str, Any]
) -> list[RunResult]:
    results: list[RunResult] = []
    for index, plan in enumerate(plans):
        if fail_fast and any(not r.ok for r in results):
            results.append(skipped(plan))
            continue
        plan.run_dir.mkdir(parents=True, exist_ok=True)  # a single run's folder is the allocated one
        results.append(run_plan(plan, index, progress, context))
    return results


def _parallel(
    plans: tuple[RunPlan, ...], jobs: int, progress: Progress | None, fail_fast: bool, context: dict[str, Any]
) -> list[RunResult]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()

    def relay() -> None:
        while (event := queue.get()) is not None:
            if progress:
                progress(event)

    relay_thread = threading.Thread(target=relay, daemon=True)
    relay_thread.start()
    threads = max(1, available_cpus() // jobs)
    results: dict[int, RunResult] = {}
    try:
        with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker, initargs=(queue, threads)) as pool:
            futures = {pool.submit(_run_in_worker, plan, i, context): i for i, plan in enumerate(plans)}
            pending = set(futures)
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        index = futures[future]
                        results[index] = skipped(plans[index]) if future.cancelled() else future.result()
                    if fail_fast and any(not r.ok for r in results.values()):
                        for future in pending:
                            future.cancel()
            except KeyboardInterrupt:
                for future in pending:  # start nothing new; running workers record their interruption
                    future.cancel()
                raise
    finally:
        queue.put(None)
        relay_thread.join(timeout=5)
    return [results.get(i) or skipped(plan) for i, plan in enumerate(plans)]


def run_all(
    plans: tuple[RunPlan, ...],
    jobs: int = 1,
    progress: Progress | None = None,
    fail_fast: bool = False,
    context: dict[str, Any] | None = None,
) -> list[RunResult]:
    """Execute planned runs, `jobs` at a time; results in the order of `plans`.

    Args:
        plans: from `plan_runs`; their run folders must not exist yet.
        jobs: worker processes; 1 runs everything in this process.
        progress: receives every ProgressEvent, from whichever process ran it.
        fail_fast: after a failed run, start no other (running ones finish).
        context: extra facts each run.json records.

    Returns:
        One RunResult per plan: "ok", "failed", "interrupted" or "skipped".
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    jobs = min(jobs, len(plans))
    if jobs == 1:
        return _sequential(plans, progress, fail_fast, context or {})
    return _parallel(plans, jobs, progress, fail_fast, context or {})
