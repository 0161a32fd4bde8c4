"""What every benchmark measures: a command's wall time and its peak memory."""

from __future__ import annotations

import subprocess
import sys
import time


def timed(command: list[str], accept: tuple[int, ...] = (0,), env: dict | None = None) -> float:
    """Seconds ``command`` takes; stop the benchmark if it exits with a status not in ``accept``."""
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    if result.returncode not in accept:
        raise SystemExit(f"{command[:5]}... failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return elapsed


def peak_rss_mb(command: list[str], accept: tuple[int, ...] = (0,)) -> float:
    """Peak RSS of ``command`` and its waited-for descendants, in MB (measured by a fresh wrapper)."""
    wrapper = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[2:], capture_output=True); "
               "assert r.returncode in eval(sys.argv[1]), r.stderr[-2000:]; "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", wrapper, repr(accept), *command], capture_output=True, text=True,
                         check=True)
    return int(out.stdout.strip()) / 1024
