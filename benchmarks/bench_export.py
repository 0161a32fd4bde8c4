"""Benchmark `dicom-transfer export` against Orthanc, in one run.

1. Throughput: a per-instance loop with dicomweb-client (``retrieve_instance`` + write, what
   most scripts do) versus ``dicom-transfer export --all``, start-up subtracted (same command
   on a store with one instance).
2. Memory: peak RSS of ``dicom-transfer export`` for one series of 20 x 20 MB instances,
   against the same command for a series of 20 small instances.

    python benchmarks/bench_export.py [--count 1000] [--kb 256]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests")]
from measure import peak_rss_mb, timed  # noqa: E402
from servers import Orthanc  # noqa: E402

from dicom_transfer.sample import instance_bytes, uid_for  # noqa: E402

PYTHON = sys.executable

DICOMWEB_CLIENT_LOOP = textwrap.dedent("""
    import os, sys
    from dicomweb_client.api import DICOMwebClient
    client = DICOMwebClient(url=sys.argv[1])
    for item in client.search_for_instances(get_remaining=True):
        study, series, sop = (item[t]["Value"][0] for t in ("0020000D", "0020000E", "00080018"))
        ds = client.retrieve_instance(study, series, sop)
        folder = os.path.join(sys.argv[2], study, series)
        os.makedirs(folder, exist_ok=True)
        ds.save_as(os.path.join(folder, sop + ".dcm"), enforce_file_format=True)
""")


def load(server: Orthanc, count: int, pixel_bytes: int, seed: str, per_series: int = 50) -> None:
    study = uid_for(seed, "study")
    for n in range(count):
        series = uid_for(seed, "series", n // per_series)
        server.upload(instance_bytes(study, series, uid_for(seed, n), pixel_bytes=pixel_bytes,
                                     instance_number=n + 1))


def ours(url: str, out: Path) -> list[str]:
    return [PYTHON, "-m", "dicom_transfer.pipelines.cli", "export", "--dicomweb-url", url, "--all",
            "--output", str(out)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--kb", type=int, default=256)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dt-bench-export-"))

    full = Orthanc(work / "full").start()
    one = Orthanc(work / "one").start()
    try:
        load(full, args.count, args.kb * 1024, "bench-export")
        load(one, 1, args.kb * 1024, "bench-export-one")
        print(f"{args.count} instances of ~{args.kb} KB in series of 50")
        rates = {}
        for name, make in {
            "dicomweb-client loop": lambda url, out: [PYTHON, "-c", DICOMWEB_CLIENT_LOOP, url, str(out)],
            "dicom-transfer export": ours,
        }.items():
            total = timed(make(full.dicomweb, work / f"{name}-full"))
            startup = timed(make(one.dicomweb, work / f"{name}-one"))
            files = len(list((work / f"{name}-full").rglob("*.dcm")))
            assert files == args.count, f"{name} wrote {files} files"
            rates[name] = (args.count - 1) / max(total - startup, 1e-9)
            print(f"  {name:24s} total {total:6.2f} s  start-up {startup:5.2f} s  "
                  f"{rates[name]:7.1f} instances/s (marginal)")
    finally:
        full.stop()
        one.stop()

    big = Orthanc(work / "big").start()
    small = Orthanc(work / "small").start()
    try:
        load(big, 20, 20 << 20, "bench-export-big", per_series=20)
        load(small, 20, 4096, "bench-export-small", per_series=20)
        peak = peak_rss_mb(ours(big.dicomweb, work / "big-out"))
        baseline = peak_rss_mb(ours(small.dicomweb, work / "small-out"))
        size = sum(p.stat().st_size for p in (work / "big-out").rglob("*.dcm"))
    finally:
        big.stop()
        small.stop()
    shutil.rmtree(work)
    ratio = rates["dicom-transfer export"] / rates["dicomweb-client loop"]
    print(f"\n  dicom-transfer export = {ratio:.2f} x the dicomweb-client loop (target >= 3)")
    print(f"  one series of 20 x 20 MB ({size / 1e6:.0f} MB): peak RSS {peak:.0f} MB vs {baseline:.0f} MB "
          f"for 20 small instances: growth {peak - baseline:.0f} MB")


if __name__ == "__main__":
    main()
