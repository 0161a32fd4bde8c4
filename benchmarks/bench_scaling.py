"""Scaling of `dicom-transfer copy` with the number of files, and where the time goes.

In one run: copy N small files for each N of ``--counts`` (default 10,000 and 100,000) with
the in-process DirectRunner (and its worker processes, as by default), and report per N the
marginal time per file (start-up, measured on one file, subtracted) and the peak RSS (of the
launcher or of a worker, whichever is larger); then the ratios of the largest N to the smallest
(targets: time per file <= 1.1x, peak RSS <= 1.2x and <= 300 MB). ``--multi-processing`` adds
the multi_processing DirectRunner (2 workers); ``--dask`` the DaskRunner on a dask.distributed
LocalCluster of 2 worker processes (a new cluster per N, warmed by a 1-file copy, so that each N's
memory is its own), with its own start-up subtracted likewise. On Dask the peak RSS is reported per
process: the client (the `dicom-transfer copy` process that builds the graph and waits), the
scheduler (whose process also holds the 2 nannies) and each worker process, each the kernel's
high-water mark (VmHWM) over the large run; then Dask's time per file relative to the in-process
DirectRunner's. Every run writes to a destination of its own, removed only once all runs of an N
are done (a run just after the removal of many files is slower on this VM). Each stage's own
work (listing, validation, write) is also timed alone per file, single-threaded, to feed the
Dataflow model in the README.

    python benchmarks/bench_scaling.py [--counts 10000 100000] [--multi-processing] [--dask]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]
from bench_copy import count_outputs, make_files  # noqa: E402
from measure import Destinations, PeakMemory, dask_cluster, timed, timed_with_peak_rss  # noqa: E402

from dicom_transfer.io.destination import Destination  # noqa: E402
from dicom_transfer.io.instances import validate_file  # noqa: E402
from dicom_transfer.io.listing import list_pattern  # noqa: E402
from dicom_transfer.layout import Layout  # noqa: E402
from dicom_transfer.wildcards import parse_pattern  # noqa: E402

CLI = [sys.executable, "-m", "dicom_transfer.pipelines.cli", "copy"]
MULTI = ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"]


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


def copy_run(src: Path, one: Path, outputs: Destinations, count: int, extra: list[str],
             during: contextlib.AbstractContextManager | None = None) -> tuple[float, float, float, float]:
    """A copy of ``src`` (``count`` files) with the options ``extra``, and of ``one`` (its start-up),
    each to a destination of its own: total seconds, start-up seconds, seconds per file beyond the
    start-up, and the peak RSS of the copy's own process in MB. ``during`` wraps the large run,
    whose outputs are counted (a run that lost files would not be a measurement)."""
    startup = timed([*CLI, "--input", str(one), "--output", str(outputs.next()), *extra])
    destination = outputs.next()
    with during or contextlib.nullcontext():
        total, peak = timed_with_peak_rss([*CLI, "--input", str(src), "--output", str(destination), *extra])
    written = count_outputs(destination)
    if written != count:
        raise SystemExit(f"{extra or 'in-process'}: {written} of {count} files written")
    return total, startup, max(total - startup, 1e-9) / (count - 1), peak


def dask_run(src: Path, one: Path, outputs: Destinations, count: int) -> tuple[tuple[float, float, float, float],
                                                                               dict[str, tuple[float, float]]]:
    """``copy_run`` on the DaskRunner, on a LocalCluster of its own (2 worker processes) warmed by a
    1-file copy (the workers' imports); with the peak RSS of each of the cluster's processes during
    the large run and its RSS when the run began: ``{"scheduler": (peak, start), "worker 1": ...}`` in MB."""
    with dask_cluster() as (address, pid):
        on_dask = ["--runner", "DaskRunner", "--dask_client_address", address]
        timed([*CLI, "--input", str(one), "--output", str(outputs.next()), *on_dask])
        memory = PeakMemory(pid)
        run = copy_run(src, one, outputs, count, on_dask, during=memory)
    if memory.changed:
        raise SystemExit(f"a Dask worker ended or was restarted during the {count}-file run (PIDs {memory.changed})")
    workers = [pid for pid, command in memory.commands.items() if "spawn_main" in command]
    return run, {"scheduler": (memory.peaks[pid], memory.start[pid]),
                 **{f"worker {i}": (memory.peaks[worker], memory.start[worker]) for i, worker in enumerate(workers, 1)}}


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
    names = [*runs, *(["DaskRunner x2"] if args.dask else [])]
    results: dict[tuple[str, int], tuple[float, float]] = {}
    cluster_peaks: dict[int, dict[str, tuple[float, float]]] = {}
    for count in sorted(args.counts):
        src = work / f"src-{count}"
        make_files(src, count, 7 * 1024)
        outputs = Destinations(work / "out")
        for name in names:
            if name == "DaskRunner x2":
                (total, startup, per_file, peak), cluster_peaks[count] = dask_run(src, one, outputs, count)
                memory = f"peak RSS: client {peak:4.0f} MB, " + ", ".join(
                    f"{process} {mb:4.0f} MB (from {start:.0f})"
                    for process, (mb, start) in cluster_peaks[count].items())
            else:
                total, startup, per_file, peak = copy_run(src, one, outputs, count, runs[name])
                memory = f"peak RSS {peak:4.0f} MB"
            results[name, count] = per_file, peak
            print(f"  {name:20s} {count:7d} files: total {total:6.1f} s  start-up {startup:4.1f} s  "
                  f"{per_file * 1e6:6.0f} us/file  {memory}", flush=True)
        if count == min(args.counts):
            costs = stage_costs(src, work / "stages")
            shutil.rmtree(work / "stages")
        outputs.remove_all()
        shutil.rmtree(src)
    shutil.rmtree(work)
    small, large = min(args.counts), max(args.counts)
    print(f"\n  {large} vs {small} files (targets: time per file <= 1.1x; peak RSS <= 1.2x and <= 300 MB a process)")
    for name in names:
        (t_small, m_small), (t_large, m_large) = results[name, small], results[name, large]
        client = " of the client (the copy's own process)" if name == "DaskRunner x2" else ""
        print(f"  {name:20s} time per file {t_large / t_small:.2f}x, peak RSS{client} {m_large:.0f} MB = "
              f"{m_large / m_small:.2f}x")
    if args.dask:
        print("  " + " " * 20 + " " + ", ".join(
            f"{process} {mb:.0f} MB = {mb / cluster_peaks[small][process][0]:.2f}x"
            for process, (mb, _) in cluster_peaks[large].items()))
        print("  DaskRunner x2 time per file / in-process DirectRunner's in the same run: " + ", ".join(
            f"{count} files {results['DaskRunner x2', count][0] / results['in-process', count][0]:.2f}x"
            for count in sorted(args.counts)))
    total = sum(costs.values())
    print("  where the time goes (own work per file, no Beam): " + ", ".join(
        f"{k} {v * 1e6:.0f} us ({100 * v / total:.0f} %)" for k, v in costs.items()))
    print(f"  pipeline overhead per file (in-process, {small} files): "
          f"{results['in-process', small][0] * 1e6 - total * 1e6:.0f} us")


if __name__ == "__main__":
    main()
