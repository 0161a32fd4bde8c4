"""What every benchmark measures: a command's wall time and its peak memory."""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


def timed(command: list[str], accept: tuple[int, ...] = (0,), env: dict | None = None) -> float:
    """Seconds ``command`` takes; stop the benchmark if it exits with a status not in ``accept``."""
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    if result.returncode not in accept:
        raise SystemExit(f"{command[:5]}... failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return elapsed


def timed_with_cpu(command: list[str], accept: tuple[int, ...] = (0,)) -> tuple[float, float]:
    """Seconds ``command`` takes, by the clock and in CPU (user + system, its waited-for
    descendants included): CPU seconds vary much less than the clock on a shared machine."""
    elapsed, user, system = timed_with_user_system(command, accept)
    return elapsed, user + system


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
