"""copy on Dask (a LocalCluster of 2 worker processes) beside the DirectRunner, in one run.

Marginal time per file (start-up, measured on one file, subtracted) for N small files. On one
machine Dask mostly shows its overhead (tasks, serialisation between processes); its point is
running on many machines (see the README's Dask section).

    .venv/bin/python benchmarks/bench_dask.py [--count 10000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]
from measure import dask_cluster, marginal_costs, timed  # noqa: E402

from dicom_transfer.sample import write_sample_set  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10000)
    options = parser.parse_args()
    with dask_cluster() as (address, _), tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        per_series = 100
        write_sample_set(str(root / "src"), studies=max(1, options.count // (10 * per_series)),
                         series_per_study=10, instances_per_series=per_series, bad_files=False)
        count = sum(1 for _ in (root / "src").rglob("*.dcm"))
        write_sample_set(str(root / "one"), studies=1, series_per_study=1, instances_per_series=1,
                         bad_files=False)
        cli = [sys.executable, "-m", "dicom_transfer.pipelines.cli", "copy", "-q"]

        def commands(src: Path, dst: Path) -> dict[str, list[str]]:
            return {"DirectRunner (in-process)": [*cli, "--input", str(src), "--output", str(dst)],
                    "DaskRunner (2 worker processes)": [*cli, "--input", str(src), "--output", str(dst),
                                                        "--runner", "DaskRunner",
                                                        "--dask_client_address", address]}

        # The cluster's first run pays the workers' imports (Beam, the product): not a cost per file.
        timed(commands(root / "one", root / "warm")["DaskRunner (2 worker processes)"])
        print(f"copy of {count} files of ~5 KB")
        results = marginal_costs(commands, root / "src", root / "one", root / "dst", count)
        direct, on_dask = (results[name][2] for name in results)
        print(f"\nDask / DirectRunner time per file: {on_dask / direct:.2f}x")


if __name__ == "__main__":
    main()
