"""Scaling of `dicom-transfer copy` on this machine, and where the time goes.

In one run: copy N small files with the in-process DirectRunner and with the
multi_processing DirectRunner (2 workers), and time each stage's own work alone
(listing, validation, write) per file, single-threaded, to feed the Dataflow model
in the README.

    python benchmarks/bench_scaling.py [--count 20000]
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
from measure import timed  # noqa: E402

from dicom_transfer.io.destination import Destination  # noqa: E402
from dicom_transfer.io.listing import list_pattern  # noqa: E402
from dicom_transfer.layout import Layout  # noqa: E402
from dicom_transfer.transforms.validate import validate_file  # noqa: E402
from dicom_transfer.wildcards import parse_pattern  # noqa: E402

CLI = [sys.executable, "-m", "dicom_transfer.pipelines.cli", "copy"]


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
    parser.add_argument("--count", type=int, default=20000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dt-bench-scaling-"))
    src, one = work / "src", work / "one"
    make_files(src, args.count, 7 * 1024)
    make_files(one, 1, 7 * 1024)
    runs = {"in-process": [], "multi_processing x2": ["--direct_running_mode", "multi_processing",
                                                     "--direct_num_workers", "2"]}
    rates = {}
    for name, extra in runs.items():
        total = timed([*CLI, "--input", str(src), "--output", str(work / name), *extra])
        startup = timed([*CLI, "--input", str(one), "--output", str(work / f"{name}-one"), *extra])
        rates[name] = (args.count - 1) / max(total - startup, 1e-9)
        print(f"  {name:22s} total {total:6.2f} s  start-up {startup:5.2f} s  {rates[name]:7.0f} files/s")
    costs = stage_costs(src, work / "stages")
    shutil.rmtree(work)
    print(f"\n  speed-up of multi_processing x2: {rates['multi_processing x2'] / rates['in-process']:.2f}")
    total = sum(costs.values())
    print("  where the time goes (own work per file, no Beam): " + ", ".join(
        f"{k} {v * 1e6:.0f} us ({100 * v / total:.0f} %)" for k, v in costs.items()))
    print(f"  pipeline overhead per file (in-process): {1e6 / rates['in-process'] - total * 1e6:.0f} us")


if __name__ == "__main__":
    main()
