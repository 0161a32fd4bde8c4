"""Benchmark `dicom-transfer import` against Orthanc, in one run, versus two baselines:

1. dicomweb-client's ``store_instances``, one instance per request, in a loop (what most
   scripts do);
2. a hand-tuned script: batches of 32 instances per STOW-RS request, 4 threads, requests;
3. ``dicom-transfer import`` with its defaults (and any ``--variant`` of its options, same run);

and the peak RSS of importing one sparse 2 GB instance (streamed, never buffered).

Each run goes to a fresh Orthanc. Start-up (the same command on one file) is subtracted. Besides
the clock, the CPU seconds of the command (with its children) and of the Orthanc process are
measured: on a machine with few cores, CPU the client spends per instance is CPU the server does
not get, and CPU figures vary less than the clock when the machine is shared.

    python benchmarks/bench_import.py [--count 1500] [--kb 256] [--huge-gb 2] [--repeat 1]
        [--variant 'c8=--concurrency 8' ...] [--baseline-src OTHER_CHECKOUT]
        [--orthanc-config '{"StoreMD5ForAttachments": false}']
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests"), str(HERE)]
from measure import children_cpu, peak_rss_mb  # noqa: E402
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


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass
class Cost:
    """Wall seconds, client CPU seconds and server CPU seconds of one command."""

    wall: float
    client: float
    server: float

    def __sub__(self, other: Cost) -> Cost:
        return Cost(self.wall - other.wall, self.client - other.client, self.server - other.server)

    def __truediv__(self, count: float) -> Cost:
        return Cost(self.wall / count, self.client / count, self.server / count)


def run_against_fresh_orthanc(work: Path, name: str, command, config: dict | None = None) -> tuple[Cost, int]:
    """Run ``command(url)`` against a new Orthanc with empty storage (its folder is removed
    afterwards: a later round must not find the instances there, or an import with its
    existence check would send nothing)."""
    storage = work / f"orthanc-{name}"
    shutil.rmtree(storage, ignore_errors=True)
    server = Orthanc(storage, extra_config=config).start()
    try:
        assert server.process is not None
        server_before, client_before = process_cpu(server.process.pid), children_cpu()
        started = time.perf_counter()
        result = subprocess.run(command(server.dicomweb), capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        cost = Cost(elapsed, children_cpu() - client_before, process_cpu(server.process.pid) - server_before)
        if result.returncode != 0:
            raise SystemExit(f"{name} failed ({result.returncode}):\n{result.stderr[-3000:]}")
        stored = server.count_instances()
    finally:
        server.stop()
        shutil.rmtree(storage, ignore_errors=True)
    return cost, stored


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


def ours(work: Path, extra: list[str], code: str | None = None):
    from bench_copy import with_code_from

    cli = with_code_from(code) if code else [PYTHON, "-m", "dicom_transfer.pipelines.cli"]
    return lambda folder: lambda url: [
        *cli, "import", "--input", str(folder),
        "--dicomweb-url", url, "--errors", str(work / "e.log"), "--summary", str(work / "s.json"), *extra]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1500)
    parser.add_argument("--kb", type=int, default=256, help="pixel data per instance, KB")
    parser.add_argument("--huge-gb", type=float, default=2.0,
                        help="size of the sparse instance whose import is measured for peak RSS (0: skip)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every command (alternating their order)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=OPTIONS",
                        help="also run dicom-transfer import with these options, e.g. 'c8=--concurrency 8'")
    parser.add_argument("--baseline-src", default=None, metavar="DIR",
                        help="also run the import of the code in DIR (another checkout), for a before/after")
    parser.add_argument("--orthanc-config", type=json.loads, default=None, metavar="JSON",
                        help="settings added to every Orthanc's configuration (the same for every contender)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dt-bench-import-"))
    full, one = work / "full", work / "one"
    make_set(full, args.count, args.kb * 1024, "bench-import")
    make_set(one, 1, args.kb * 1024, "bench-import-one")
    commands = {
        "dicomweb-client loop": lambda folder: lambda url: [PYTHON, "-c", DICOMWEB_CLIENT_LOOP, url, str(folder)],
        "hand-tuned batches+threads": lambda folder: lambda url: [PYTHON, "-c", HAND_TUNED, url, str(folder)],
        # with a baseline, both run through the same launcher (python -c, code from a checkout)
        "dicom-transfer import": ours(work, [], str(HERE.parent) if args.baseline_src else None),
    }
    if args.baseline_src:
        commands["import baseline-src"] = ours(work, [], args.baseline_src)
    for variant in args.variant:
        name, _, options = variant.partition("=")
        commands[f"import {name}"] = ours(work, options.split())
    print(f"{args.count} instances of ~{args.kb} KB; {os.cpu_count()} cores; load {os.getloadavg()[0]:.2f}"
          + (f"; Orthanc with {json.dumps(args.orthanc_config)}" if args.orthanc_config else ""))
    print("  marginal per instance: wall, client CPU, Orthanc CPU (start-up subtracted)")
    rounds: list[dict[str, Cost]] = []
    for round_ in range(args.repeat):
        measured: dict[str, Cost] = {}
        names = list(commands) if round_ % 2 == 0 else list(reversed(commands))  # no order favours one
        for name in names:
            total, stored = run_against_fresh_orthanc(work, name, commands[name](full), args.orthanc_config)
            startup, _ = run_against_fresh_orthanc(work, name + "-one", commands[name](one), args.orthanc_config)
            assert stored == args.count, f"{name} stored {stored} of {args.count}"
            measured[name] = marginal = (total - startup) / max(args.count - 1, 1)
            print(f"  {name:28s} total {total.wall:6.2f} s  start-up {startup.wall:5.2f} s  "
                  f"{1 / max(marginal.wall, 1e-9):7.1f} instances/s  {marginal.wall * 1e3:5.2f} ms  "
                  f"client {marginal.client * 1e3:5.2f} ms CPU  Orthanc {marginal.server * 1e3:5.2f} ms CPU")
        rounds.append(measured)
        print(f"  (load {os.getloadavg()[0]:.2f})")
    if args.huge_gb > 0:
        growth = huge_instance_rss(work, int(args.huge_gb * (1 << 30)), one)
        print(f"  import of one {args.huge_gb:.1f} GB instance: peak RSS growth {growth:.0f} MB "
              "over importing one small instance")
    shutil.rmtree(work)
    print("\n  ratios within each round (median of the rounds last)")
    for name in commands:
        if not name.startswith(("dicom-transfer", "import ")):
            continue
        loop = [r["dicomweb-client loop"].wall / r[name].wall for r in rounds]
        tuned = [r["hand-tuned batches+threads"].wall / r[name].wall for r in rounds]
        client = [r[name].client / r["hand-tuned batches+threads"].client for r in rounds]
        both = [(r[name].client + r[name].server) / (r["hand-tuned batches+threads"].client
                                                     + r["hand-tuned batches+threads"].server) for r in rounds]
        print(f"  {name}: {_each(loop, 'x')} the dicomweb-client loop (target >= 4); "
              f"{_each([100 * t for t in tuned], '%', 0)} of the hand-tuned script (target >= 100 %); "
              f"CPU per instance vs the hand-tuned script's: client {_each(client, 'x')}, "
              f"client + Orthanc {_each(both, 'x')}")


def _each(values: list[float], unit: str, digits: int = 2) -> str:
    shown = ", ".join(f"{v:.{digits}f}" for v in values)
    return f"{shown} -> {statistics.median(values):.{digits}f} {unit}" if len(values) > 1 else f"{shown} {unit}"


if __name__ == "__main__":
    main()
