"""Concurrent I/O inside a DoFn: a batch of elements is worked on by a thread pool.

Transfers wait on disks, object stores and servers far more than they compute,
so a worker keeps several elements in flight. The work itself runs on the
pool's threads; Beam Metrics and progress are updated on the bundle's thread,
where the runner collects them.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import apache_beam as beam

DEFAULT_THREADS = 8
BATCH = 64
T = TypeVar("T")
R = TypeVar("R")


class PooledFn(beam.DoFn):
    """A DoFn with a pool of ``threads`` threads, made in ``setup()`` (none for one thread)."""

    def __init__(self, threads: int = DEFAULT_THREADS) -> None:
        self.threads = max(1, threads)

    def setup(self) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(self.threads) if self.threads > 1 else None

    def teardown(self) -> None:
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.shutdown(wait=True)

    def each(self, work: Callable[[T], R], element: T | list[T]) -> Iterable[R]:
        """``work`` over the batch ``element`` on the pool, in order (a list: :func:`batched` made it
        for several threads), or over the single ``element`` (one thread: no batching)."""
        if isinstance(element, list):
            return self.pool.map(work, element) if self.pool else map(work, element)
        return [work(element)]


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


def batched(threads: int) -> beam.PTransform:
    """Batches sized for a :class:`BatchedIoFn` with ``threads`` threads (one thread: no batching)."""
    if threads <= 1:
        return beam.Map(_alone)
    return beam.BatchElements(min_batch_size=BATCH, max_batch_size=BATCH)
