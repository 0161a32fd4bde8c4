"""Scaling of `dicom-transfer copy` with the number of files, and where the time goes.

In one run: copy N small files for each N of ``--counts`` (default 10,000 and 100,000) with
the in-process DirectRunner, and report per N the marginal time per file (start-up, measured
on one file, subtracted) and the peak RSS; then the ratios of the largest N to the smallest
(targets: time per file <= 1.1x, peak RSS <= 1.2x and <= 300 MB). ``--multi-processing`` adds
the multi_processing DirectRunner (2 workers); ``--dask`` the DaskRunner on a dask.distributed
LocalCluster of 2 worker processes (a new cluster per N, so that each N's memory is its own): its
peak RSS is reported per process kind — the launcher (client), the largest worker process, and
the whole cluster (scheduler, nannies and workers summed), polled every 0.1 s. Each stage's own
work (listing, validation, write) is also timed alone per file, single-threaded, to feed the
Dataflow model in the README.

    python benchmarks/bench_scaling.py [--counts 10000 100000] [--multi-processing] [--dask]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]
from bench_copy import make_files  # noqa: E402
from measure import timed, timed_with_peak_rss  # noqa: E402

from dicom_transfer.io.destination import Destination  # noqa: E402
from dicom_transfer.io.listing import list_pattern  # noqa: E402
from dicom_transfer.layout import Layout  # noqa: E402
from dicom_transfer.transforms.validate import validate_file  # noqa: E402
from dicom_transfer.wildcards import parse_pattern  # noqa: E402

CLI = [sys.executable, "-m", "dicom_transfer.pipelines.cli", "copy"]
MULTI = ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"]


class TreeMemory:
    """Peak RSS of the processes under ``pid`` (it included), polled every ``interval`` seconds
    while in use, in MB: the largest process below ``pid`` (for a LocalCluster, whose scheduler
    is ``pid`` itself: a nanny or a worker) and the sum over all of them."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.root = psutil.Process(pid)
        self.interval = interval
        self.largest_worker = self.total = 0.0
        self.stop = threading.Event()

    def __enter__(self) -> TreeMemory:
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def _poll(self) -> None:
        while not self.stop.wait(self.interval):
            sizes = {}
            for process in [self.root, *self.root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    sizes[process.pid] = process.memory_info().rss / (1 << 20)
            others = [rss for pid, rss in sizes.items() if pid != self.root.pid]
            self.largest_worker = max(self.largest_worker, max(others, default=0.0))
            self.total = max(self.total, sum(sizes.values()))


@contextlib.contextmanager
def dask_cluster() -> Iterator[tuple[str, int]]:
    """A LocalCluster of 2 worker processes (tests/dask_cluster.py): ``(address, pid)``; stopped by
    its process group at the end."""
    cluster = subprocess.Popen([sys.executable, str(HERE.parent / "tests" / "dask_cluster.py")],
                               stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert cluster.stdout is not None
        yield cluster.stdout.readline().strip(), cluster.pid
    finally:
        os.killpg(cluster.pid, signal.SIGTERM)
        cluster.wait(timeout=60)


def stage_costs(src: Path, dst: Path) -> dict[str, float]:
    """Seconds per file of each stage's own work, without Beam."""
    started = time.perf_counter()
    refs = list(list_pattern(parse_pattern(str(src))))
    listed = time.perf_counter()
    instances = [validate_file(ref) for ref in refs]
    validated = time.perf_counter()
    layout, destination = Layout.parse("uid"), Destination(str(dst))
    for instance in instances:
        destination.place(layout.relative_path(instance.values()), instance.url, instance.size)
    written = time.perf_counter()
    n = len(refs)
    return {"expansion": (listed - started) / n, "validation": (validated - listed) / n,
            "write": (written - validated) / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--counts", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--multi-processing", action="store_true", help="also the multi_processing DirectRunner")
    parser.add_argument("--dask", action="store_true",
                        help="also the DaskRunner on a LocalCluster of 2 worker processes")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dt-bench-scaling-"))
    one = work / "one"
    make_files(one, 1, 7 * 1024)
    runs = {"in-process": []}
    if args.multi_processing:
        runs["multi_processing x2"] = MULTI
    results: dict[tuple[str, int], tuple[float, float]] = {}
    dask_memory: dict[int, tuple[float, float]] = {}
    for count in sorted(args.counts):
        src = work / f"src-{count}"
        make_files(src, count, 7 * 1024)
        for name, extra in runs.items():
            startup = timed([*CLI, "--input", str(one), "--output", str(work / "out-one"), *extra])
            total, peak = timed_with_peak_rss([*CLI, "--input", str(src), "--output", str(work / "out"), *extra])
            per_file = max(total - startup, 1e-9) / (count - 1)
            results[name, count] = per_file, peak
            print(f"  {name:20s} {count:7d} files: total {total:6.1f} s  start-up {startup:4.1f} s  "
                  f"{per_file * 1e6:6.0f} us/file  peak RSS {peak:5.0f} MB", flush=True)
            shutil.rmtree(work / "out")
            shutil.rmtree(work / "out-one", ignore_errors=True)
        if args.dask:
            with dask_cluster() as (address, pid):
                on_dask = ["--runner", "DaskRunner", "--dask_client_address", address]
                timed([*CLI, "--input", str(one), "--output", str(work / "out-warm"), *on_dask])  # workers' imports
                startup = timed([*CLI, "--input", str(one), "--output", str(work / "out-one"), *on_dask])
                with TreeMemory(pid) as cluster:
                    total, peak = timed_with_peak_rss([*CLI, "--input", str(src), "--output", str(work / "out"),
                                                       *on_dask])
            per_file = max(total - startup, 1e-9) / (count - 1)
            shutil.rmtree(work / "out-warm")
            results["DaskRunner x2", count] = per_file, peak
            dask_memory[count] = cluster.largest_worker, cluster.total
            print(f"  {'DaskRunner x2':20s} {count:7d} files: total {total:6.1f} s  start-up {startup:4.1f} s  "
                  f"{per_file * 1e6:6.0f} us/file  peak RSS: client {peak:5.0f} MB, largest worker "
                  f"{cluster.largest_worker:5.0f} MB, cluster in all {cluster.total:5.0f} MB", flush=True)
            shutil.rmtree(work / "out")
            shutil.rmtree(work / "out-one", ignore_errors=True)
        if count == min(args.counts):
            costs = stage_costs(src, work / "stages")
            shutil.rmtree(work / "stages")
        shutil.rmtree(src)
    shutil.rmtree(work)
    small, large = min(args.counts), max(args.counts)
    for name in [*runs, *(["DaskRunner x2"] if args.dask else [])]:
        (t_small, m_small), (t_large, m_large) = results[name, small], results[name, large]
        print(f"\n  {name}: {large} vs {small} files: time per file {t_large / t_small:.2f}x (target <= 1.1), "
              f"peak RSS {m_large:.0f} MB = {m_large / m_small:.2f}x (targets <= 300 MB, <= 1.2x)")
    if args.dask:
        (w_small, c_small), (w_large, c_large) = dask_memory[small], dask_memory[large]
        print(f"  DaskRunner x2 workers: largest worker {w_large:.0f} MB = {w_large / w_small:.2f}x, whole cluster "
              f"{c_large:.0f} MB = {c_large / c_small:.2f}x ({large} vs {small} files); time per file "
              + ", ".join(f"{count}: {results['DaskRunner x2', count][0] / results['in-process', count][0]:.2f}x"
                          for count in sorted(args.counts)) + " the in-process DirectRunner's")
    total = sum(costs.values())
    print("  where the time goes (own work per file, no Beam): " + ", ".join(
        f"{k} {v * 1e6:.0f} us ({100 * v / total:.0f} %)" for k, v in costs.items()))
    print(f"  pipeline overhead per file (in-process, {small} files): "
          f"{results['in-process', small][0] * 1e6 - total * 1e6:.0f} us")


if __name__ == "__main__":
    main()
