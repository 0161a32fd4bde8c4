"""Benchmark `dicom-transfer migrate` (Orthanc -> Orthanc) against the alternatives, in one run.

1. ``dicom-transfer migrate --all`` to an empty destination;
2. the same command again over the complete destination (it only asks);
3. (a) the product's own ``export --all`` to a local folder, then ``import`` of that folder;
4. (b) a dicomweb-client loop: ``retrieve_instance`` + ``store_instances`` one instance at a time;
5. peak RSS of ``migrate`` for one series of 20 x 20 MB instances, against 20 small ones.

Each measured run gets a fresh destination Orthanc. Start-up is measured by the same command
on a source holding one instance and subtracted for the marginal figures.

    python benchmarks/bench_migrate.py [--count 1000] [--kb 256]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests")]
from bench_export import load  # noqa: E402
from measure import peak_rss_mb, timed  # noqa: E402
from servers import Orthanc  # noqa: E402

PYTHON = sys.executable
CLI = [PYTHON, "-m", "dicom_transfer.pipelines.cli"]

DICOMWEB_CLIENT_LOOP = textwrap.dedent("""
    import sys
    from dicomweb_client.api import DICOMwebClient
    source, destination = DICOMwebClient(url=sys.argv[1]), DICOMwebClient(url=sys.argv[2])
    for item in source.search_for_instances(get_remaining=True):
        study, series, sop = (item[t]["Value"][0] for t in ("0020000D", "0020000E", "00080018"))
        destination.store_instances([source.retrieve_instance(study, series, sop)])
""")


def migrate(source: str, destination: str, work: Path) -> list[list[str]]:
    return [[*CLI, "migrate", "--source-dicomweb-url", source, "--dicomweb-url", destination, "--all",
             "--errors", str(work / "errors.log"), "--summary", str(work / "summary.json")]]


def export_then_import(source: str, destination: str, work: Path) -> list[list[str]]:
    folder = work / "staging"
    return [[*CLI, "export", "--dicomweb-url", source, "--all", "--output", str(folder)],
            [*CLI, "import", "--input", f"{folder}/**.dcm", "--dicomweb-url", destination,
             "--errors", str(work / "errors.log"), "--summary", str(work / "summary.json")]]


def import_alone(staged: Path) -> Callable:
    """The import step of :func:`export_then_import`, from the folder it exported to under ``staged``."""
    return lambda source, destination, work: export_then_import(source, destination, staged)[1:]


def dicomweb_client_loop(source: str, destination: str, work: Path) -> list[list[str]]:
    return [[PYTHON, "-c", DICOMWEB_CLIENT_LOOP, source, destination]]


def measure(name: str, make: Callable, source: Orthanc, work: Path, destination: Orthanc | None = None) -> float:
    """Seconds the commands of ``make`` take, to a fresh destination unless one is given."""
    target = destination or Orthanc(work / f"{name}-destination").start()
    try:
        folder = work / name
        folder.mkdir(parents=True, exist_ok=True)
        return sum(timed(command) for command in make(source.dicomweb, target.dicomweb, folder))
    finally:
        if destination is None:
            target.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--kb", type=int, default=256)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dt-bench-migrate-"))
    servers = [Orthanc(work / name).start() for name in ("full", "one", "kept", "kept-one")]
    full, one, kept, kept_one = servers
    try:
        load(full, args.count, args.kb * 1024, "bench-migrate")
        load(one, 1, args.kb * 1024, "bench-migrate-one")
        print(f"{args.count} instances of ~{args.kb} KB in series of 50, Orthanc -> Orthanc")
        totals, marginal = {}, {}
        for name, make in {"migrate": migrate, "export then import": export_then_import,
                           "dicomweb-client loop": dicomweb_client_loop}.items():
            keep = name == "migrate"  # its destinations are kept for the re-run
            totals[name] = measure(name, make, full, work, kept if keep else None)
            startup = measure(f"{name}-one", make, one, work, kept_one if keep else None)
            marginal[name] = max(totals[name] - startup, 1e-9)
            print(f"  {name:22s} total {totals[name]:7.2f} s  start-up {startup:5.2f} s  "
                  f"{(args.count - 1) / marginal[name]:7.1f} instances/s (marginal)")
        assert kept.count_instances() == args.count, "migrate did not move every instance"
        # The storing half of (a) alone, from the folder (a) exported: what the destination's ingest costs.
        ceiling = measure("import alone", import_alone(work / "export then import"), full, work)
        ceiling_startup = measure("import alone-one", import_alone(work / "export then import-one"), one, work)
        marginal["import alone"] = max(ceiling - ceiling_startup, 1e-9)
        print(f"  {'import alone (ceiling)':22s} total {ceiling:7.2f} s  start-up {ceiling_startup:5.2f} s  "
              f"{(args.count - 1) / marginal['import alone']:7.1f} instances/s (marginal)")
        rerun = measure("migrate-again", migrate, full, work, kept)
        rerun_startup = measure("migrate-again-one", migrate, one, work, kept_one)
    finally:
        for server in servers:
            server.stop()
    shutil.rmtree(work, ignore_errors=True)
    print(f"  migrate again over the complete destination: total {rerun:.2f} s (start-up {rerun_startup:.2f} s)\n")
    print(f"  migrate = {marginal['export then import'] / marginal['migrate']:.2f} x faster than export then "
          "import (target >= 1.5)")
    print(f"  migrate = {marginal['dicomweb-client loop'] / marginal['migrate']:.2f} x faster than the "
          "dicomweb-client loop (target >= 3)")
    print(f"  in total wall time (start-up included): {totals['export then import'] / totals['migrate']:.2f} x "
          f"and {totals['dicomweb-client loop'] / totals['migrate']:.2f} x")
    print(f"  migrate takes {marginal['migrate'] / marginal['import alone']:.2f} x the time of storing alone "
          "(import of the exported folder): retrieval is hidden behind the destination's ingest")
    print(f"  re-run: {totals['migrate'] / rerun:.1f} x faster than the first run in total; start-up subtracted "
          f"{marginal['migrate'] / max(rerun - rerun_startup, 1e-3):.1f} x (target >= 20)")
    big, small = memory(Path(tempfile.mkdtemp(prefix="dt-bench-migrate-rss-")))
    print(f"  one series of 20 x 20 MB: peak RSS {big:.0f} MB vs {small:.0f} MB for 20 small instances: "
          f"growth {big - small:.0f} MB")


def memory(work: Path) -> tuple[float, float]:
    """Peak RSS of migrate for one series of 20 x 20 MB instances, and for 20 x 4 KB."""
    peaks = []
    for name, size in (("big", 20 << 20), ("small", 4096)):
        source, destination = Orthanc(work / f"{name}-source").start(), Orthanc(work / f"{name}-dest").start()
        try:
            load(source, 20, size, f"bench-migrate-{name}", per_series=20)
            peaks.append(peak_rss_mb(migrate(source.dicomweb, destination.dicomweb, work)[0]))
            assert destination.count_instances() == 20
        finally:
            source.stop()
            destination.stop()
    shutil.rmtree(work, ignore_errors=True)
    return peaks[0], peaks[1]


if __name__ == "__main__":
    main()
