"""Periodic progress lines for long runs, one logger per DoFn instance."""

from __future__ import annotations

import logging
import time

LOG = logging.getLogger("dicom_transfer.progress")


class ProgressLog:
    """Logs ``stage: N instances, X MB, R instances/s`` at most every ``interval`` seconds.

    Each worker reports what it did itself; there is no shared state, so it is
    safe on any runner.
    """

    def __init__(self, stage: str, interval: float = 10.0) -> None:
        self.stage = stage
        self.interval = interval
        self.started = time.monotonic()
        self.last = self.started
        self.count = 0
        self.bytes = 0

    def add(self, count: int = 1, nbytes: int = 0) -> None:
        self.count += count
        self.bytes += nbytes
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self.log(now)

    def log(self, now: float | None = None) -> None:
        elapsed = max((now or time.monotonic()) - self.started, 1e-9)
        LOG.info(
            "%s: %d instances, %.1f MB, %.1f instances/s, %.1f MB/s",
            self.stage, self.count, self.bytes / 1e6, self.count / elapsed,
            self.bytes / 1e6 / elapsed,
        )
