"""Scaling of `dicom-transfer copy` with the number of files, and where the time goes.

In one run: copy N small files for each N of ``--counts`` (default 10,000 and 100,000) with
the in-process DirectRunner, and report per N the marginal time per file (start-up, measured
on one file, subtracted) and the peak RSS; then the ratios of the largest N to the smallest
(targets: time per file <= 1.1x, peak RSS <= 1.2x and <= 300 MB). ``--multi-processing`` adds
the multi_processing DirectRunner (2 workers). Each stage's own work (listing, validation,
write) is also timed alone per file, single-threaded, to feed the Dataflow model in the README.

    python benchmarks/bench_scaling.py [--counts 10000 100000] [--multi-processing]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

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
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dt-bench-scaling-"))
    one = work / "one"
    make_files(one, 1, 7 * 1024)
    runs = {"in-process": []}
    if args.multi_processing:
        runs["multi_processing x2"] = MULTI
    results: dict[tuple[str, int], tuple[float, float]] = {}
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
        if count == min(args.counts):
            costs = stage_costs(src, work / "stages")
            shutil.rmtree(work / "stages")
        shutil.rmtree(src)
    shutil.rmtree(work)
    small, large = min(args.counts), max(args.counts)
    for name in runs:
        (t_small, m_small), (t_large, m_large) = results[name, small], results[name, large]
        print(f"\n  {name}: {large} vs {small} files: time per file {t_large / t_small:.2f}x (target <= 1.1), "
              f"peak RSS {m_large:.0f} MB = {m_large / m_small:.2f}x (targets <= 300 MB, <= 1.2x)")
    total = sum(costs.values())
    print("  where the time goes (own work per file, no Beam): " + ", ".join(
        f"{k} {v * 1e6:.0f} us ({100 * v / total:.0f} %)" for k, v in costs.items()))
    print(f"  pipeline overhead per file (in-process, {small} files): "
          f"{results['in-process', small][0] * 1e6 - total * 1e6:.0f} us")


if __name__ == "__main__":
    main()
