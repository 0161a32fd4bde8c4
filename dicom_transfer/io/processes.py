"""Worker processes on this machine for the CPU-bound part of a local run.

Reading, validating and writing a small file costs ~0.3 ms of CPU, most of it Python's, so one
process copies ~3,000 files a second however many cores the machine has (threads share one
interpreter lock). Beam's own answer, its DirectRunner's ``multi_processing`` mode, runs the whole
pipeline in each worker, each importing Beam, and sends every element between the runner and
its workers over gRPC.
:class:`WorkerProcesses` keeps the pipeline in one process and gives batches of files to a pool
of processes that do only the per-file work and send back each file's small result.

The workers are forked from the launcher (``fork``: they start in milliseconds, with what it has
imported, and run whatever script started it, guarded by ``__main__`` or not, without importing
it again as ``spawn`` and ``forkserver`` would). A forked worker runs nothing of the launcher's
other threads: it reads, validates and writes files, and logs through a queue to its launcher,
whose handlers write the records (its level, format, ``--log-file``). Workers ignore Ctrl-C (their
launcher stops the run, closes them — each finishes the files in hand, which may not
all be counted in the summary — and says what it counted), end with SIGTERM (a scheduler's stop:
the launcher's own handling says what was written), and end at once when their launcher goes
however it ends (a watchdog).
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import contextlib
import gc
import logging
import logging.handlers
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import warnings
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

from dicom_transfer.errors import WorkerDied, already_reported

_WORKER: Any = None  # in a worker process: the object whose methods the launcher calls
_OPEN: weakref.WeakSet[WorkerProcesses] = weakref.WeakSet()


class _Relay(logging.Handler):
    """In the launcher: a worker's log record, handled as if it had been logged here."""

    def handle(self, record: logging.LogRecord) -> bool:
        bug = getattr(record, "bug", None)
        if bug is not None and already_reported(bug):  # a bug's traceback once per run, not per process
            return True
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)
        return True


def _start_worker(worker: Any, log_queue: Any) -> None:
    global _WORKER
    # Ctrl-C reaches every process of the terminal's group: the launcher alone stops the run. It was
    # blocked from before the fork (a Ctrl-C then would have killed this worker and broken the pool).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    # SIGTERM ends a worker at once: when one dies, the pool stops the others with it and waits for
    # them. Not the launcher's handler, inherited by the fork (it stops a run with KeyboardInterrupt,
    # which the pool catches around a chunk's work and sends back: the worker lived on, and the
    # pool, then the run, waited for it for ever).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # Every record goes to the launcher (levels stay as the launcher set them): no handler of its
    # own writes here, to a stream or file the launcher may be writing at the same time.
    for logger in [logging.getLogger(), *(logging.getLogger(name) for name in logging.Logger.manager.loggerDict)]:
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger().addHandler(logging.handlers.QueueHandler(log_queue))
    threading.Thread(target=_watch, name="launcher-watchdog", daemon=True).start()
    _WORKER = worker


def _watch() -> None:
    """End this worker as soon as its launcher is gone: the pipe multiprocessing keeps open from
    the launcher to each process it starts (its "parent sentinel") then reads as closed."""
    launcher = multiprocessing.parent_process()
    if launcher is not None:
        multiprocessing.connection.wait([launcher.sentinel])
    os._exit(1)


def _call(method: str, items: Sequence, args: tuple) -> list:
    return getattr(_WORKER, method)(items, *args)


class WorkerProcesses:
    """``count`` processes, each with ``worker`` as it was when they started, that run
    ``worker.METHOD(chunk, *args)`` for chunks of a batch (:meth:`map`).

    Started on first use; :meth:`close` stops them (and :func:`close_all` every open one).
    """

    def __init__(self, count: int, worker: Any) -> None:
        self.count = count
        self.worker = worker
        self.pool: concurrent.futures.ProcessPoolExecutor | None = None
        self.listener: logging.handlers.QueueListener | None = None
        self.forked = False

    def _start(self) -> concurrent.futures.ProcessPoolExecutor:
        context = multiprocessing.get_context("fork")
        log_queue = context.Queue()
        self.listener = logging.handlers.QueueListener(log_queue, _Relay())
        self.listener.start()
        self.pool = concurrent.futures.ProcessPoolExecutor(
            self.count, mp_context=context, initializer=_start_worker, initargs=(self.worker, log_queue))
        _OPEN.add(self)
        return self.pool

    def map(self, method: str, items: Sequence, chunk: int, *args: Any) -> Iterator:
        """The results of ``worker.METHOD`` (a list per chunk) for ``items``, in their order, the
        chunks of ``chunk`` items worked on at once by the processes. The chunks are given to the
        processes now; the results come as they are read.

        Raises
        ------
        WorkerDied
            A worker process ended in the middle (killed, out of memory): the run cannot go on.
        """
        pool = self.pool or self._start()
        chunks = [items[start:start + chunk] for start in range(0, len(items), chunk)]
        try:
            with self._forking() if not self.forked else contextlib.nullcontext():
                results = pool.map(_call, [method] * len(chunks), chunks, [args] * len(chunks))
        except concurrent.futures.process.BrokenProcessPool as exc:
            raise _died() from exc
        self.forked = True
        return _in_order(results)

    @staticmethod
    @contextlib.contextmanager
    def _forking() -> Iterator[None]:
        """Around the first submission, in which the pool forks its workers (at once, from this
        thread): the objects this process has then are left out of the workers' garbage
        collections, which would otherwise write to each of them and so copy every page of this
        process's heap into each worker; Ctrl-C waits until each worker ignores it."""
        gc.freeze()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            with warnings.catch_warnings():
                # Python 3.12+ warns of fork() in a process with threads: the workers run none of them
                warnings.filterwarnings("ignore", message=r".*fork\(\) may lead to deadlocks",
                                        category=DeprecationWarning)
                yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            gc.unfreeze()  # here, not in the workers

    def close(self) -> None:
        """Stop the workers once they have finished the chunks they are working on."""
        _OPEN.discard(self)
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        if self.listener is not None:
            self.listener.stop()
            self.listener = None


def _in_order(results: Iterator[list]) -> Iterator:
    try:
        for chunk_results in results:
            yield from chunk_results
    except concurrent.futures.process.BrokenProcessPool as exc:
        raise _died() from exc


def _died() -> WorkerDied:
    return WorkerDied("a worker process ended in the middle of the run (killed? out of memory?); what "
                      "was written stays, complete: run the same command again to finish")


def close_all() -> None:
    """Close every open :class:`WorkerProcesses` (a run that ends, however it ends)."""
    for workers in list(_OPEN):
        workers.close()
