"""Start-up: a 1-file copy against an empty DirectRunner pipeline, and --help, in one run.

Targets (#14): a 1-file copy ≤ 1.3× an empty DirectRunner pipeline (Create + Map + run) measured
in the same run; ``dicom-transfer --help`` < 0.5 s. Each command is run ``--repeat`` times,
alternating, and the median is reported (start-up is noisy on a shared machine).

Beam's DirectRunner first tries its Prism runner (a download from GitHub: here, without internet,
a failed attempt); the product's local runs start the DirectRunner's FnApiRunner themselves. So
the copy is also compared with an empty pipeline on that engine, the stricter baseline.

    .venv/bin/python benchmarks/bench_startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from measure import timed

from dicom_transfer.sample import write_sample_set

EMPTY = ("import apache_beam as beam\n"
         "with beam.Pipeline() as p:\n"
         "    p | beam.Create([1]) | beam.Map(lambda x: x)\n")
EMPTY_FNAPI = ("import apache_beam as beam\n"
               "from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner\n"
               "with beam.Pipeline(runner=FnApiRunner()) as p:\n"
               "    p | beam.Create([1]) | beam.Map(lambda x: x)\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args()
    cli = [sys.executable, "-m", "dicom_transfer.pipelines.cli"]
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        write_sample_set(str(root / "in"), studies=1, series_per_study=1, instances_per_series=1, bad_files=False)
        commands = {
            "empty DirectRunner pipeline": [sys.executable, "-c", EMPTY],
            "empty pipeline, FnApiRunner": [sys.executable, "-c", EMPTY_FNAPI],
            "copy of 1 file": [*cli, "copy", "-q", "--input", str(root / "in"), "--output", str(root / "out")],
            "dicom-transfer --help": [*cli, "--help"],
            "dicom-transfer copy --help": [*cli, "copy", "--help"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(options.repeat):
            for name, command in commands.items():
                shutil.rmtree(root / "out", ignore_errors=True)
                times[name].append(timed(command))
    median = {name: statistics.median(values) for name, values in times.items()}
    for name, value in median.items():
        print(f"{name:32s} {value:6.2f} s  (median of {options.repeat}: "
              f"{', '.join(f'{v:.2f}' for v in times[name])})")
    ratio = median["copy of 1 file"] / median["empty DirectRunner pipeline"]
    same_engine = median["copy of 1 file"] / median["empty pipeline, FnApiRunner"]
    print(f"\n1-file copy / empty pipeline: {ratio:.2f}x (target <= 1.3x); {same_engine:.2f}x the empty "
          f"pipeline on the FnApiRunner; --help {median['dicom-transfer --help']:.2f} s (target < 0.5 s)")


if __name__ == "__main__":
    main()
