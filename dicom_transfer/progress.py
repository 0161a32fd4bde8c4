"""Progress of a run: what workers report, and the one line the launcher shows.

Workers count what each DoFn instance did (``ProgressLog``). On a local runner
(DirectRunner, in-process or with worker processes) the launcher listens on a
loopback UDP port named by ``$DICOM_TRANSFER_PROGRESS``; each DoFn instance
sends its running totals there at most twice a second, and the launcher sums
the latest totals of every sender into one aggregated display
(:class:`ProgressDisplay`: a tqdm bar on a terminal, periodic log lines
otherwise). A lost datagram costs nothing: the next one carries the totals.
Without that variable (Dataflow and other distributed runners, whose
launcher is elsewhere) each worker logs its own lines every 10 s instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import sys
import threading
import time

from dicom_transfer.vocabulary import Kind

LOG = logging.getLogger("dicom_transfer.progress")
ENV = "DICOM_TRANSFER_PROGRESS"
FIELDS = ("found", "success", "unchanged", "failure", "filtered", "bytes", "patterns")


class ProgressLog:
    """Running totals of one DoFn instance for one ``stage``.

    ``add(count, nbytes)`` counts work in the stage's own unit (used by the
    per-worker log lines); ``report(field, n)`` adds to one of ``FIELDS``:
    ``found`` inputs, final outcomes (``success``, ``unchanged``, ``failure``,
    ``filtered``), ``bytes`` moved, ``patterns`` fully expanded.
    """

    def __init__(self, stage: str, interval: float = 10.0) -> None:
        self.stage = stage
        self.interval = interval
        self.started = time.monotonic()
        self.last = self.started
        self.count = 0
        self.bytes = 0
        self.totals = dict.fromkeys(FIELDS, 0)
        self.key = f"{os.getpid()}:{id(self)}"
        self.address = _address(os.environ.get(ENV, ""))
        self.socket: socket.socket | None = None
        self.sent_at = 0.0

    def add(self, count: int = 1, nbytes: int = 0) -> None:
        self.count += count
        self.bytes += nbytes
        now = time.monotonic()
        if self.address is None and now - self.last >= self.interval:
            self.last = now
            self.log(now)

    def report(self, field: str, n: int = 1) -> None:
        self.totals[field] += n
        if self.address is not None and time.monotonic() - self.sent_at >= 0.5:
            self.flush()

    def outcome(self, kind: str, size: int) -> None:
        """Report an instance's final outcome (``success`` also adds its ``size`` to ``bytes``)."""
        if kind in (Kind.SUCCESS, Kind.UNCHANGED, Kind.FILTERED):
            self.report(kind)
        if kind == Kind.SUCCESS:
            self.report("bytes", size)

    def flush(self) -> None:
        """Send the totals now (call at the end of a bundle: nothing is lost at the end)."""
        if self.address is None:
            return
        self.sent_at = time.monotonic()
        try:
            if self.socket is None:
                self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.socket.sendto(json.dumps({"k": self.key, **self.totals}).encode(), self.address)
        except OSError:
            pass  # progress only: never let it disturb the transfer

    def log(self, now: float | None = None) -> None:
        if self.address is not None:  # the launcher shows the aggregated progress instead
            return
        elapsed = max((now or time.monotonic()) - self.started, 1e-9)
        LOG.info(
            "%s: %d instances, %s, %.1f instances/s, %s/s", self.stage, self.count,
            format_bytes(self.bytes), self.count / elapsed, format_bytes(self.bytes / elapsed))

    def __getstate__(self) -> dict:  # a DoFn holding one is pickled: sockets are not
        return {**self.__dict__, "socket": None}


def _address(text: str) -> tuple[str, int] | None:
    host, _, port = text.rpartition(":")
    return (host, int(port)) if host and port.isdigit() else None


def format_bytes(n: float) -> str:
    """``38 KB``, ``1.5 MB``, ``2.1 GB`` (powers of 1000, as file managers and gsutil show)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit in ("B", "KB") or n >= 100 else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def plural(n: int, word: str, plural_form: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (plural_form or word + 's')}"


@dataclasses.dataclass
class Totals:
    """The sum over every sender of its latest totals."""

    found: int = 0
    success: int = 0
    unchanged: int = 0
    failure: int = 0
    filtered: int = 0
    bytes: int = 0
    patterns: int = 0

    @property
    def done(self) -> int:
        return self.success + self.unchanged + self.failure + self.filtered


class ProgressListener:
    """Receives the workers' totals on a loopback UDP port (a thread of the launcher)."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0.2)
        self.latest: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._receive, name="progress-listener", daemon=True)

    @property
    def address(self) -> str:
        host, port = self.socket.getsockname()
        return f"{host}:{port}"

    def start(self) -> ProgressListener:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        with contextlib.suppress(OSError):  # wake the receiving thread now rather than at its timeout
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"", self.socket.getsockname())
        self.thread.join(timeout=2)
        self.socket.close()

    def totals(self) -> Totals:
        with self.lock:
            senders = list(self.latest.values())
        totals = Totals()
        for sender in senders:
            for field in FIELDS:
                setattr(totals, field, getattr(totals, field) + int(sender.get(field, 0)))
        return totals

    def _receive(self) -> None:
        while not self.stopped.is_set():
            try:
                data = self.socket.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                message = json.loads(data)
                key = str(message.pop("k"))
            except (ValueError, KeyError, TypeError):
                continue
            with self.lock:
                self.latest[key] = message


class ProgressDisplay:
    """One aggregated progress view: a tqdm bar on a terminal, periodic lines otherwise.

    ``patterns`` is the number of patterns the run expands (0 when the total is
    not known in advance, as for an export): once every one is expanded the
    total is final and an ETA is shown.
    """

    def __init__(self, listener: ProgressListener, mode: str, patterns: int = 0,
                 interval: float = 10.0, stream=None) -> None:
        self.listener = listener
        self.patterns = patterns
        self.interval = interval
        self.stream = stream or sys.stderr
        self.mode = mode if mode != "auto" else ("bar" if _is_terminal(self.stream) else "lines")
        self.started = time.monotonic()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="progress-display", daemon=True)
        self.bar = None

    def start(self) -> ProgressDisplay:
        if self.mode == "none":
            return self
        if self.mode == "bar":
            from tqdm import tqdm

            width = _terminal_width(self.stream)  # 0 on a terminal that reports no size: tqdm draws nothing
            self.bar = tqdm(total=0, unit=" inst", file=self.stream, dynamic_ncols=bool(width), ncols=width or 100,
                            nrows=None if width else 24, leave=True,
                            bar_format="{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]"
                                       "{postfix}")
        self.thread.start()
        return self

    def stop(self) -> Totals:
        """Stop showing progress (with a last line, in ``lines`` mode); return the last totals."""
        if self.stopped.is_set():
            return self.listener.totals()
        self.stopped.set()
        if self.thread.is_alive():
            self.thread.join(timeout=2)
        time.sleep(0.05)  # the workers' last datagrams, sent as their bundles ended
        totals = self.listener.totals()
        if self.bar is not None:  # the last state stays on the screen, as gsutil's does
            self._draw(totals)
            self.bar.close()
        elif self.mode == "lines":
            self._log(totals)
        return totals

    def _draw(self, totals: Totals) -> None:
        if self.bar is None:
            return
        self.bar.total = max(totals.found, totals.done)
        self.bar.n = totals.done
        self.bar.set_postfix_str(f"{format_bytes(totals.bytes)}, {totals.failure:,} failed", refresh=False)
        self.bar.refresh()

    def _log(self, totals: Totals) -> None:
        LOG.info("progress: %s", self.line(totals),
                 extra={"event": "progress", "totals": dataclasses.asdict(totals)})

    def line(self, totals: Totals) -> str:
        """``copy: 998/1,000 instances (2 failed), 37 MB, 120 instances/s, ETA 0:00:01``."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        final = self.patterns and totals.patterns >= self.patterns
        total = f"{totals.found:,}" if final else f"{totals.found:,}+"
        rate = totals.done / elapsed
        text = f"{totals.done:,}/{total} instances"
        if totals.failure:
            text += f" ({totals.failure:,} failed)"
        text += f", {format_bytes(totals.bytes)}, {rate:.1f} instances/s"
        if final and rate > 0 and totals.found > totals.done:
            text += f", ETA {_duration((totals.found - totals.done) / rate)}"
        return text

    def _run(self) -> None:
        last_line = time.monotonic()
        while not self.stopped.wait(0.25):
            totals = self.listener.totals()
            if self.bar is not None:
                self._draw(totals)
            elif time.monotonic() - last_line >= self.interval:
                last_line = time.monotonic()
                self._log(totals)


def _terminal_width(stream) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return 0


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
