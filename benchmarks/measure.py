"""What every benchmark measures: a command's wall time and its peak memory."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent


def timed(command: list[str], accept: tuple[int, ...] = (0,), env: dict | None = None) -> float:
    """Seconds ``command`` takes; stop the benchmark if it exits with a status not in ``accept``."""
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    if result.returncode not in accept:
        raise SystemExit(f"{command[:5]}... failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return elapsed


def timed_with_user_system(command: list[str], accept: tuple[int, ...] = (0,)) -> tuple[float, float, float]:
    """Seconds ``command`` takes by the clock, and its user and system CPU seconds apart (its
    waited-for descendants included): user time is the Python work of a run; system time, the
    kernel's file-system work, is what writeback and other processes' I/O disturb most."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    elapsed = timed(command, accept)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return elapsed, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


class Destinations:
    """A destination of its own for each run, beside ``base`` (``base-1``, ``base-2``...), all
    removed together at the end: on this VM a run just after the removal of thousands of files
    was up to 1.9x slower (the freed page cache is handed back and faulted in again), which fell
    on whichever command came next. Before each run, the previous one's writes are flushed (not
    written back during it)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.made: list[Path] = []

    def next(self) -> Path:
        os.sync()
        self.made.append(self.base.with_name(f"{self.base.name}-{len(self.made) + 1}"))
        return self.made[-1]

    def remove_all(self) -> None:
        for path in self.made:
            shutil.rmtree(path, ignore_errors=True)


def children_cpu() -> float:
    """CPU seconds (user + system) this process's waited-for children have used so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb(command: list[str], accept: tuple[int, ...] = (0,)) -> float:
    """Peak RSS of ``command`` and its waited-for descendants, in MB (measured by a fresh wrapper)."""
    return timed_with_peak_rss(command, accept)[1]


def timed_with_peak_rss(command: list[str], accept: tuple[int, ...] = (0,)) -> tuple[float, float]:
    """Seconds ``command`` takes, and the peak RSS of it and its waited-for descendants in MB
    (both measured by a fresh wrapper process)."""
    wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
               "r = subprocess.run(sys.argv[2:], capture_output=True); t = time.perf_counter() - t; "
               "assert r.returncode in eval(sys.argv[1]), r.stderr[-2000:]; "
               "print(t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", wrapper, repr(accept), *command], capture_output=True, text=True,
                         check=True)
    seconds, kilobytes = out.stdout.split()
    return float(seconds), int(kilobytes) / 1024


def marginal_costs(commands: Callable[[Path, Path], dict[str, list[str]]], src: Path, one: Path, dst: Path,
                   count: int, rounds: int = 1) -> dict[str, tuple[float, float, float]]:
    """Run each command of ``commands(source, destination)`` on ``src`` (``count`` files) and on
    ``one`` (a single file: its start-up); print and return ``{name: (total, start-up, per file)}``.

    With ``rounds`` > 1 the commands run in turn that many times (so that a disturbance of the
    machine falls on all of them alike) and each time is the median of its rounds: on a shared
    machine a single start-up can be off by a second, which moves a marginal cost a lot."""
    times: dict[str, tuple[list[float], list[float]]] = {}
    destinations = Destinations(dst)
    for _ in range(rounds):
        for name in commands(src, dst):
            full, startup = (timed(commands(source, destinations.next())[name]) for source in (src, one))
            fulls, startups = times.setdefault(name, ([], []))
            fulls.append(full)
            startups.append(startup)
    destinations.remove_all()
    results = {}
    for name, (fulls, startups) in times.items():
        full, startup = statistics.median(fulls), statistics.median(startups)
        per_file = max(full - startup, 1e-9) / max(count - 1, 1)
        results[name] = (full, startup, per_file)
        spread = f"  (total {min(fulls):.2f}-{max(fulls):.2f} s over {rounds} rounds)" if rounds > 1 else ""
        print(f"  {name:30s} total {full:7.2f} s  start-up {startup:5.2f} s  "
              f"marginal {per_file * 1e6:8.1f} us/file  {1 / per_file:8.0f} files/s{spread}")
    return results


@contextlib.contextmanager
def dask_cluster() -> Iterator[tuple[str, int]]:
    """A dask.distributed LocalCluster of 2 worker processes on 127.0.0.1, the one the Dask tests
    use (``tests/dask_cluster.py``, a process of its own: a LocalCluster with worker processes must
    be made under ``__main__``): ``(scheduler address, PID of the scheduler's process)``. Stopped
    by its process group at the end."""
    cluster = subprocess.Popen([sys.executable, str(REPO / "tests" / "dask_cluster.py")], stdout=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        assert cluster.stdout is not None
        address = cluster.stdout.readline().strip()
        if not address:
            raise SystemExit("the Dask cluster did not start")
        yield address, cluster.pid
    finally:
        os.killpg(cluster.pid, signal.SIGTERM)
        cluster.wait(timeout=60)


def _status_mb(pid: int, field: str) -> float:
    """A memory figure of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``...) in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith(f"{field}:"))) / 1024


class PeakMemory:
    """Peak RSS of a process and of each of its descendants over a ``with`` block, in MB: each
    one's high-water mark (VmHWM) is reset on entry (``/proc/PID/clear_refs``) and read on exit, so
    a spike between two polls is not missed. ``peaks`` maps each PID to its peak and ``start`` to
    its RSS on entry; ``changed`` holds the PIDs that ended or started during the block (a worker
    restarted: its peak is unknown); ``commands`` each process's command line as it was on entry."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.peaks: dict[int, float] = {}
        self.start: dict[int, float] = {}
        self.changed: list[int] = []

    def __enter__(self) -> PeakMemory:
        self.processes = [self.root, *self.root.children(recursive=True)]
        self.commands = {process.pid: " ".join(process.cmdline()) for process in self.processes}
        for process in self.processes:
            Path(f"/proc/{process.pid}/clear_refs").write_text("5")
            self.start[process.pid] = _status_mb(process.pid, "VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        for process in self.processes:
            try:
                self.peaks[process.pid] = _status_mb(process.pid, "VmHWM")
            except FileNotFoundError:
                self.changed.append(process.pid)
        self.changed += [p.pid for p in self.root.children(recursive=True) if p not in self.processes]
