"""Micro-batching: concurrent predict jobs share one forward pass, across adapters where they can.

Jobs submit their model inputs (named batch-first arrays, worker/tasks) and wait on a future.
One batcher thread takes the oldest request, then gathers more with the same batch key (the op,
and every input's name, per-image shape and dtype) that can share its forward, until
`max_images` images are collected, `max_wait_ms` has passed since the first, or no job that
could still join is in flight, runs one forward on the inputs concatenated by name, and hands
each job exactly its rows of every output back, in order. Each request carries its adapter and a
*mix group* (worker/adapters.py): `join(batch group, request group)` says whether it can join
(peft's mixed-adapter batches); a request that cannot waits for a later batch. The forward gets
one adapter, or one per row when the batch mixes them.

A job holds a `Ticket` from the moment it starts until it submits or ends: the batcher waits
only while some ticket is open, so a lone job never waits for company that is not coming.
Dropping a ticket takes the job's request out before its batch runs (RunPod's job-stop).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from worker.telemetry import percentile

Inputs = dict[str, np.ndarray]  # named batch-first arrays


def batch_key(inputs: Inputs, op: str) -> tuple[Any, ...]:
    """What requests must share to run in one forward (besides a mix group): the op and each input's
    per-image shape."""
    return (op, *sorted((name, array.shape[1:], array.dtype.str) for name, array in inputs.items()))


def _rows(inputs: Inputs) -> int:
    return len(next(iter(inputs.values())))


def same_group(batch: str, request: str) -> str | None:
    """The default rule: only requests of the same group (adapter) share a forward."""
    return batch if batch == request else None


@dataclass
class _Request:
    adapter: str | None
    op: str
    group: str
    inputs: Inputs
    key: tuple[Any, ...]
    images: int
    submitted: float = field(default_factory=time.perf_counter)
    future: Future = field(default_factory=Future)


_TICKET: contextvars.ContextVar[Ticket | None] = contextvars.ContextVar("fastbackend_ticket", default=None)


class Ticket:
    """One job's place in the batcher: open (it may still submit) until it submits or ends."""

    def __init__(self, batcher: MicroBatcher) -> None:
        self._batcher = batcher
        self._open = True
        self.cancelled = False
        self._future: Future | None = None

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Run the job's thread as this ticket's job; closes the ticket after."""
        token = _TICKET.set(self)
        try:
            with self._batcher.cpu_slots:
                yield
        finally:
            _TICKET.reset(token)
            self._batcher._close(self)

    def drop(self) -> None:
        """Drop what is left of this job: its request leaves the batch it waits for (if that batch
        has not started), a later submit raises. After the job's answer this changes nothing."""
        with self._batcher._cond:
            self.cancelled = True
            future = self._future
        if future is not None:
            future.cancel()  # only a request whose batch has not started; the batcher skips it
        self._batcher._close(self)


@contextlib.contextmanager
def off_cpu() -> Iterator[None]:
    """Give the job's CPU slot back while the block waits on I/O (a URL, a slow disk), so jobs that
    need the CPU (ping, health, a base64 predict) are not held behind it; take it again after."""
    ticket = _TICKET.get()
    if ticket is None:  # not a job of the async handler: it holds no slot
        yield
        return
    ticket._batcher.cpu_slots.release()
    try:
        yield
    finally:
        ticket._batcher.cpu_slots.acquire()


class MicroBatcher:
    """Runs `run_batch(inputs, adapter or one adapter per row, op) -> outputs` (the served model's
    forward, worker/models.py) over batches gathered from concurrent jobs."""

    def __init__(
        self,
        run_batch: Callable[[Inputs, Any, str], Inputs],
        max_images: int,
        max_wait_ms: float,
        join: Callable[[str, str], str | None] = same_group,
    ) -> None:
        self._run_batch = run_batch
        self._join = join
        self.max_images = max_images
        self.max_wait_s = max_wait_ms / 1000
        # Jobs' own CPU work (parse, decode, preprocess, answer) runs in at most this many threads
        # at once: dozens of runnable threads fighting for the GIL starve the SDK's event loop,
        # which takes and answers every job (measured: 4.8 ms of CPU per job with 64 runnable).
        self.cpu_slots = threading.Semaphore(max(2, os.cpu_count() or 1))
        self._cond = threading.Condition()  # guards the inbox and the open-ticket count
        self._inbox: deque[_Request] = deque()
        self._open_tickets = 0  # jobs that may still submit
        self._forming = False  # the batcher thread holds requests for a batch it has not run yet
        self._waiting: deque[_Request] = deque()  # taken from the inbox, for a later batch (batcher thread only)
        self._lock = threading.Lock()
        self._batch_sizes: Counter[int] = Counter()
        self._queue_wait_ms: deque[float] = deque(maxlen=2048)
        self._thread = threading.Thread(target=self._run, name="fastbackend-batcher", daemon=True)
        self._thread.start()

    def outputs(self, inputs: Inputs, adapter: str | None, op: str = "predict", group: str | None = None) -> Inputs:
        """Blocking: this job's rows of the outputs of the batch it joins (raises what the batch raised).
        `group`: the adapter's mix group (default: the adapter alone).

        A job alone (nothing queued, no other job that could still join) runs its forward in its
        own thread: handing it to the batcher thread and back cost a lone job ~25% on the
        embedded model (two thread switches), and there is no company to wait for.
        """
        if self._alone():
            return self._run_batch_of_one(inputs, adapter, op)
        future = self.submit(inputs, adapter, op, group)
        if _TICKET.get() is None:
            return future.result()
        self.cpu_slots.release()  # waiting for the batch takes no CPU: let another job decode
        try:
            return future.result()
        finally:
            self.cpu_slots.acquire()

    def _alone(self) -> bool:
        """True (and this job's ticket closed) when no other job is queued or may still submit."""
        ticket = _TICKET.get()
        with self._cond:
            if ticket is not None and ticket.cancelled:
                raise CancelledError()
            others = self._open_tickets - (1 if ticket is not None and ticket._open else 0)
            if self._inbox or self._waiting or self._forming or others > 0:
                return False
            if ticket is not None:
                self._close_locked(ticket)  # a job arriving now must not wait for this one
            return True

    def _run_batch_of_one(self, inputs: Inputs, adapter: str | None, op: str) -> Inputs:
        outputs = self._run_batch(inputs, adapter, op)  # the model's own lock keeps forwards one at a time
        with self._lock:
            self._batch_sizes[_rows(inputs)] += 1
            self._queue_wait_ms.append(0.0)
        return outputs

    def ticket(self) -> Ticket:
        """Count a starting job as one that may join a batch (call before it runs)."""
        with self._cond:
            self._open_tickets += 1
        return Ticket(self)

    def submit(self, inputs: Inputs, adapter: str | None, op: str = "predict", group: str | None = None) -> Future:
        group = f"adapter:{adapter}" if group is None else group
        request = _Request(adapter, op, group, inputs, batch_key(inputs, op), _rows(inputs))
        ticket = _TICKET.get()
        with self._cond:
            if ticket is not None:
                if ticket.cancelled:
                    raise CancelledError()
                ticket._future = request.future
                self._close_locked(ticket)
            self._inbox.append(request)
            self._cond.notify()
        return request.future

    def _close(self, ticket: Ticket) -> None:
        with self._cond:
            self._close_locked(ticket)

    def _close_locked(self, ticket: Ticket) -> None:
        if ticket._open:
            ticket._open = False
            self._open_tickets -= 1
            self._cond.notify()

    def _next(self, deadline: float | None) -> _Request | None:
        """The next request; None once nothing can arrive before the deadline (or at all)."""
        with self._cond:
            while not self._inbox:
                if deadline is None:
                    self._cond.wait()
                    continue
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or self._open_tickets == 0:
                    return None  # a job that has nothing to wait for runs now
                self._cond.wait(remaining)
            self._forming = True  # a batch is forming: a job arriving now joins it, not runs alone
            return self._inbox.popleft()

    def _gather(self) -> list[_Request]:
        first = self._waiting.popleft() if self._waiting else self._next(None)
        batch, images, group = [first], first.images, first.group
        deadline = first.submitted + self.max_wait_s
        # Requests already set aside that can join come first, in arrival order.
        for request in list(self._waiting):
            joined = self._join(group, request.group) if request.key == first.key else None
            if joined is not None and images + request.images <= self.max_images:
                self._waiting.remove(request)
                batch.append(request)
                images, group = images + request.images, joined
        while images < self.max_images:
            request = self._next(deadline)
            if request is None:
                break
            joined = self._join(group, request.group) if request.key == first.key else None
            if joined is not None and images + request.images <= self.max_images:
                batch.append(request)
                images, group = images + request.images, joined
            else:
                self._waiting.append(request)
                if joined is not None:
                    break  # the batch is full for it
        return batch

    def _run(self) -> None:
        while True:
            batch = [r for r in self._gather() if r.future.set_running_or_notify_cancel()]
            with self._cond:
                self._forming = False
            if not batch:
                continue
            started = time.perf_counter()
            try:
                names = batch[0].inputs
                joined = {n: np.concatenate([r.inputs[n] for r in batch]) for n in names} if len(batch) > 1 else names
                adapters = {r.adapter for r in batch}
                per_row = [r.adapter for r in batch for _ in range(r.images)]
                adapter = batch[0].adapter if len(adapters) == 1 else per_row
                outputs = self._run_batch(joined, adapter, batch[0].op)
            except BaseException as exc:  # the model failed: every job of this batch learns why
                for request in batch:
                    request.future.set_exception(exc)
                continue
            with self._lock:
                self._batch_sizes[sum(r.images for r in batch)] += 1
                self._queue_wait_ms.extend((started - r.submitted) * 1000 for r in batch)
            offset = 0
            for request in batch:
                end = offset + request.images
                request.future.set_result({name: array[offset:end] for name, array in outputs.items()})
                offset = end

    def stats(self) -> dict[str, Any]:
        with self._lock:
            waits = sorted(self._queue_wait_ms)
        return {
            "batch_size_histogram": {str(k): v for k, v in sorted(self._batch_sizes.items())},
            "forwards": sum(self._batch_sizes.values()),
            "queue_wait_ms": {
                "p50": percentile(waits, 0.5),
                "p95": percentile(waits, 0.95),
                "max": percentile(waits, 1),
            },
        }
