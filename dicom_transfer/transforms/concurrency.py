"""Concurrent I/O inside a DoFn: a batch of elements is worked on by a thread pool.

Transfers wait on disks, object stores and servers far more than they compute,
so a worker keeps several elements in flight. The work itself runs on the
pool's threads; Beam Metrics and progress are updated on the bundle's thread,
where the runner collects them.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import apache_beam as beam

from dicom_transfer.io.processes import WorkerProcesses
from dicom_transfer.transforms.dofn import DoFn, finished

DEFAULT_THREADS = 8
BATCH = 64
# With worker processes: batches of PROCESS_BATCH elements, given to them in chunks of PROCESS_CHUNK
PROCESS_BATCH = 256
PROCESS_CHUNK = 32
LOG = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


class PooledFn(DoFn):
    """A DoFn with a pool of ``threads`` threads, made in ``setup()`` (none for one thread), and
    ``processes`` worker processes forked from it on first use (:meth:`each`; for a
    runner whose workers are threads of one process: the DirectRunner in-process)."""

    def __init__(self, threads: int = DEFAULT_THREADS, processes: int = 1) -> None:
        self.threads = max(1, threads)
        self.processes = max(1, processes)

    def setup(self) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(self.threads) if self.threads > 1 else None
        self.workers: WorkerProcesses | None = None
        self.ahead: collections.deque[Iterator] = collections.deque()  # see each_ahead

    def teardown(self) -> None:
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.shutdown(wait=True)
        workers = getattr(self, "workers", None)
        if workers is not None:
            workers.close()

    def _in_processes(self, method: str, batch: T | list[T]) -> Iterator | None:
        """The results of ``self.METHOD(chunk)`` (a list per chunk) over ``batch`` in the worker
        processes, in order; None when it is this process's to work on (one process, or a batch
        smaller than a chunk). The workers are forked from this DoFn as it is then (set up)."""
        if self.processes <= 1 or not isinstance(batch, list) or len(batch) < PROCESS_CHUNK:
            return None
        if self.workers is None:
            self.workers = WorkerProcesses(self.processes, self)
            LOG.debug("%d worker processes share out the work of %s", self.processes, type(self).__name__)
        return self.workers.map(method, batch, PROCESS_CHUNK)

    def each(self, work: Callable[[T], R], element: T | list[T], batch_method: str | None = None) -> Iterable[R]:
        """``work`` over the batch ``element`` on the pool, in order (a list: :func:`batched` made it
        for several threads or processes), or over the single ``element`` (one thread: no batching).
        ``batch_method``: the name of this DoFn's method that does ``work`` over a list, for the
        worker processes, which then get the batch (see :meth:`_in_processes`)."""
        if batch_method is not None:
            in_processes = self._in_processes(batch_method, element)
            if in_processes is not None:
                return in_processes
        if isinstance(element, list):
            return self.pool.map(work, element) if self.pool else map(work, element)
        return [work(element)]

    def each_ahead(self, work: Callable[[T], R], element: T | list[T], batch_method: str) -> Iterable[R]:
        """As :meth:`each`, but a batch given to the worker processes stays ahead: what is returned
        is the previous batch's results, so that the workers go on with this one while this process
        hands those on and Beam makes the next batch (with one batch at a time, the workers waited
        for both). The last results come from :meth:`finish_ahead`, in ``finish_bundle``."""
        results = self._in_processes(batch_method, element)
        if results is None:
            if not self.ahead:
                return self.each(work, element)
            results = iter(list(self.each(work, element)))  # after those ahead: results stay in order
        self.ahead.append(results)
        return self.ahead.popleft() if len(self.ahead) > 1 else ()

    def finish_ahead(self, outputs: Callable[[R], Iterable]) -> Iterator:
        """For ``finish_bundle``: ``outputs(result)`` for the results still ahead (see
        :meth:`each_ahead`), in the global window."""
        while self.ahead:
            for result in self.ahead.popleft():
                for output in outputs(result):
                    yield finished(output)


class BatchedIoFn(PooledFn):
    """Subclasses implement :meth:`work` (thread-safe, no Metrics) and :meth:`account`."""

    def process(self, batch: list) -> Iterator:
        results = self.each(self.work, batch)
        for outputs in results:
            for output in outputs:
                self.account(output)
                yield output

    def work(self, element) -> Iterable:
        raise NotImplementedError

    def account(self, output) -> None:
        """Update counters for one output (runs on the bundle's thread)."""


def _alone(element) -> list:
    return [element]


def batched(threads: int, processes: int = 1) -> beam.PTransform:
    """Batches sized for a :class:`PooledFn` with ``threads`` threads or ``processes`` processes
    (one of each: no batching)."""
    if processes > 1:
        return beam.BatchElements(min_batch_size=PROCESS_BATCH, max_batch_size=PROCESS_BATCH)
    if threads <= 1:
        return beam.Map(_alone)
    return beam.BatchElements(min_batch_size=BATCH, max_batch_size=BATCH)
