"""Concurrent I/O inside a DoFn: a batch of elements is worked on by a thread pool.

Transfers wait on disks, object stores and servers far more than they compute,
so a worker keeps several elements in flight. The work itself runs on the
pool's threads; Beam Metrics and progress are updated on the bundle's thread,
where the runner collects them.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterable, Iterator

import apache_beam as beam

DEFAULT_THREADS = 8
BATCH = 64


class BatchedIoFn(beam.DoFn):
    """Subclasses implement :meth:`work` (thread-safe, no Metrics) and :meth:`account`."""

    def __init__(self, threads: int = DEFAULT_THREADS) -> None:
        self.threads = max(1, threads)

    def setup(self) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(self.threads) if self.threads > 1 else None

    def teardown(self) -> None:
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.shutdown(wait=True)

    def process(self, batch: list) -> Iterator:
        results = self.pool.map(self.work, batch) if self.pool else map(self.work, batch)
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
