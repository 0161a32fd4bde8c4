"""Benchmark `dicom-transfer import` against Orthanc, in one run, versus two baselines:

1. dicomweb-client's ``store_instances``, one instance per request, in a loop (what most
   scripts do);
2. a hand-tuned script: batches of 32 instances per STOW-RS request, 4 threads, requests;
3. ``dicom-transfer import`` in its best documented configuration;

and the peak RSS of importing one sparse 2 GB instance (streamed, never buffered).

Each run goes to a fresh Orthanc. Start-up (the same command on one file) is subtracted.

    python benchmarks/bench_import.py [--count 1500] [--kb 256] [--huge-gb 2]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests"), str(HERE)]
from measure import peak_rss_mb  # noqa: E402
from servers import Orthanc  # noqa: E402

from dicom_transfer.sample import instance_bytes, uid_for  # noqa: E402

PYTHON = sys.executable

DICOMWEB_CLIENT_LOOP = textwrap.dedent("""
    import sys, pathlib, pydicom
    from dicomweb_client.api import DICOMwebClient
    client = DICOMwebClient(url=sys.argv[1])
    for path in sorted(pathlib.Path(sys.argv[2]).rglob("*.dcm")):
        client.store_instances(datasets=[pydicom.dcmread(path)])
""")

HAND_TUNED = textwrap.dedent("""
    import sys, pathlib, uuid, requests
    from concurrent.futures import ThreadPoolExecutor
    url, folder = sys.argv[1], sys.argv[2]
    paths = sorted(pathlib.Path(folder).rglob("*.dcm"))
    batches = [paths[i:i + 32] for i in range(0, len(paths), 32)]
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=8))
    def send(batch):
        boundary = uuid.uuid4().hex
        body = b"".join(b"--" + boundary.encode() + b"\\r\\nContent-Type: application/dicom\\r\\n\\r\\n"
                        + p.read_bytes() + b"\\r\\n" for p in batch) + b"--" + boundary.encode() + b"--\\r\\n"
        r = session.post(url + "/studies", data=body, headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json"})
        r.raise_for_status()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(send, batches))
""")


def make_set(folder: Path, count: int, pixel_bytes: int, seed: str) -> None:
    folder.mkdir(parents=True)
    study = uid_for(seed, "study")
    for n in range(count):
        series = uid_for(seed, "series", n // 100)
        data = instance_bytes(study, series, uid_for(seed, n), pixel_bytes=pixel_bytes, instance_number=n + 1)
        (folder / f"{n:06d}.dcm").write_bytes(data)


def run_against_fresh_orthanc(work: Path, name: str, command) -> float:
    server = Orthanc(work / f"orthanc-{name}").start()
    try:
        started = time.perf_counter()
        result = subprocess.run(command(server.dicomweb), capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(f"{name} failed ({result.returncode}):\n{result.stderr[-3000:]}")
        stored = server.count_instances()
    finally:
        server.stop()
    return elapsed, stored


def huge_instance_rss(work: Path, size: int, small: Path) -> float:
    """Peak RSS growth of importing one sparse instance of ``size`` bytes (streamed, never buffered)."""
    from bench_copy import make_sparse_instance

    huge = work / "huge"
    huge.mkdir()
    make_sparse_instance(huge / "huge.dcm", size)
    peaks = []
    for folder in (small, huge):
        server = Orthanc(work / f"orthanc-rss-{folder.name}").start()
        try:
            peaks.append(peak_rss_mb([PYTHON, "-m", "dicom_transfer.pipelines.cli", "import", "--input", str(folder),
                                      "--dicomweb-url", server.dicomweb, "--errors", str(work / "e.log"),
                                      "--summary", str(work / "s.json"), "--request-timeout", "1200"]))
        finally:
            server.stop()
    return peaks[1] - peaks[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1500)
    parser.add_argument("--kb", type=int, default=256, help="pixel data per instance, KB")
    parser.add_argument("--huge-gb", type=float, default=2.0,
                        help="size of the sparse instance whose import is measured for peak RSS (0: skip)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dt-bench-import-"))
    full, one = work / "full", work / "one"
    make_set(full, args.count, args.kb * 1024, "bench-import")
    make_set(one, 1, args.kb * 1024, "bench-import-one")
    commands = {
        "dicomweb-client loop": lambda folder: lambda url: [PYTHON, "-c", DICOMWEB_CLIENT_LOOP, url, str(folder)],
        "hand-tuned batches+threads": lambda folder: lambda url: [PYTHON, "-c", HAND_TUNED, url, str(folder)],
        "dicom-transfer import": lambda folder: lambda url: [
            PYTHON, "-m", "dicom_transfer.pipelines.cli", "import", "--input", str(folder),
            "--dicomweb-url", url, "--errors", str(work / "e.log"), "--summary", str(work / "s.json"),
            "--concurrency", "4", "--max-instances-per-request", "32"],
    }
    print(f"{args.count} instances of ~{args.kb} KB")
    rates = {}
    for name, make in commands.items():
        total, stored = run_against_fresh_orthanc(work, name, make(full))
        startup, _ = run_against_fresh_orthanc(work, name + "-one", make(one))
        marginal = max(total - startup, 1e-9) / max(args.count - 1, 1)
        rates[name] = 1 / marginal
        assert stored == args.count, f"{name} stored {stored} of {args.count}"
        print(f"  {name:28s} total {total:6.2f} s  start-up {startup:5.2f} s  "
              f"{rates[name]:7.1f} instances/s (marginal)")
    if args.huge_gb > 0:
        growth = huge_instance_rss(work, int(args.huge_gb * (1 << 30)), one)
        print(f"  import of one {args.huge_gb:.1f} GB instance: peak RSS growth {growth:.0f} MB "
              "over importing one small instance")
    shutil.rmtree(work)
    ours = rates["dicom-transfer import"]
    print(f"\n  dicom-transfer import = {ours / rates['dicomweb-client loop']:.2f} x the dicomweb-client "
          "loop (target >= 3)")
    print(f"  dicom-transfer import = {100 * ours / rates['hand-tuned batches+threads']:.0f} % of the "
          "hand-tuned ceiling (target >= 80 %)")


if __name__ == "__main__":
    main()
