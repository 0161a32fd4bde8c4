"""Benchmark `dicom-transfer copy` within object stores, against the emulators, in one run.

1. Bytes read by the worker per instance for a same-store copy (target <= 64 KB, whatever the
   instance size), with 512 KB and 20 MB instances, on fake-gcs-server and Azurite.
2. Throughput of `dicom-transfer copy` versus a naive loop (open, read the whole object, pydicom
   parse, write it back through fsspec), start-up subtracted, gs:// to gs://, under two network
   conditions: the bare emulator on loopback, and the emulator behind a relay that answers every
   request ``--latency-ms`` late (a cloud store's time to first byte; loopback has none).
   fake-gcs-server slows down as a bucket fills (its writes are linear in the objects it holds),
   so every measured run gets a fresh server holding the same objects.

    python benchmarks/bench_cloud.py [--count 300] [--large-count 40] [--latency-ms 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests")]
import fsspec  # noqa: E402
from measure import timed  # noqa: E402
from servers import Azurite, FakeGcs, FaultProxy, counting_store_reads  # noqa: E402

from dicom_transfer.sample import instance_bytes, uid_for  # noqa: E402

NAIVE_LOOP = textwrap.dedent("""
    import io, sys, fsspec, pydicom
    src, dst = sys.argv[1], sys.argv[2]
    fs, root = fsspec.core.url_to_fs(src)
    out_fs, out_root = fsspec.core.url_to_fs(dst)
    for path in fs.find(root):
        data = fs.cat(path)
        ds = pydicom.dcmread(io.BytesIO(data))
        out_fs.pipe(f"{out_root}/{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm", data)
""")


def fill(url: str, count: int, pixel_bytes: int, seed: str, fs: fsspec.AbstractFileSystem | None = None) -> None:
    url_fs, root = fsspec.core.url_to_fs(url)
    fs = fs or url_fs
    study = uid_for(seed, "study")
    for n in range(count):
        data = instance_bytes(study, uid_for(seed, "series", n // 100), uid_for(seed, n),
                              pixel_bytes=pixel_bytes, instance_number=n + 1)
        fs.pipe(f"{root}/{n:05d}.dcm", data)


def late(seconds: float):
    """A relay plan that answers every request ``seconds`` late."""
    return lambda *_: ("slow", seconds)


def marginal_rate(make, count: int, size: int, work: Path, latency: float) -> tuple[float, float, float, float]:
    """(total s, start-up s, instances/s, emulator CPU s per instance) of one tool on a fresh
    fake-gcs-server holding ``count`` instances of ``size`` pixel bytes (plus one, for the
    start-up run)."""
    import gcsfs

    gcs = FakeGcs(work / f"gcs-{uuid.uuid4().hex[:6]}").start()
    relay = FaultProxy(gcs.url, plan=late(latency)).start() if latency else None
    try:
        fs = gcsfs.GCSFileSystem(endpoint_url=gcs.url, token="anon", skip_instance_cache=True)
        fs.mkdir("speed")
        fill("gs://speed/many", count, size, f"many{size}", fs)
        fill("gs://speed/one", 1, size, f"one{size}", fs)
        env = {**os.environ, **gcs.env, "STORAGE_EMULATOR_HOST": (relay or gcs).url}
        startup = timed(make("gs://speed/one", "gs://speed/one-out"), env=env)
        server_before = cpu_seconds(gcs.process.pid)
        total = timed(make("gs://speed/many", "gs://speed/many-out"), env=env)
        server_cpu = cpu_seconds(gcs.process.pid) - server_before
        copied = len([p for p in fs.find("speed/many-out") if "/.dicom-transfer/" not in p])
        if copied != count:
            raise SystemExit(f"{make('', '')[:4]} copied {copied} of {count} instances")
    finally:
        if relay:
            relay.stop()
        gcs.stop()
    return total, startup, (count - 1) / max(total - startup, 1e-9), server_cpu / count


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bytes_read_per_instance(scheme: str, source: str, count: int) -> float:
    """Run the copy in this process and count the bytes the store sent us."""
    from dicom_transfer.pipelines.cli import main

    fs, root = fsspec.core.url_to_fs(source)
    with counting_store_reads(f"{scheme}{fs.find(root)[0]}") as counted:
        out = f"{source.rsplit('/', 1)[0]}/out-{uuid.uuid4().hex[:6]}"
        status = main(["copy", "--input", source, "--output", out, "--errors", "/dev/null",
                       "--summary", f"{tempfile.gettempdir()}/bench-cloud-summary.json"])
        assert status == 0, status
    return sum(counted) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=300, help="512 KB instances per throughput run")
    parser.add_argument("--large-count", type=int, default=40, help="20 MB instances per throughput run")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="per-request latency of the second run")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dt-bench-cloud-"))
    gcs = FakeGcs(work / "gcs").start()
    azurite = Azurite(work / "azurite", str(HERE.parent / ".tools/node_modules/.bin/azurite-blob")).start()
    os.environ.update(gcs.env)
    os.environ.update(azurite.env)
    fsspec.config.conf.setdefault("gcs", {})["token"] = "anon"
    fsspec.config.conf.setdefault("gs", {})["token"] = "anon"
    try:
        print("Bytes read by the worker per instance, same-store copy (target <= 64 KB):")
        for scheme, bucket in (("gs://", "bench-read"), ("az://", "benchread")):
            fsspec.filesystem(scheme.rstrip(":/")).mkdir(bucket)
            for label, count, size in (("512 KB", 50, 512 << 10), ("20 MB", 10, 20 << 20)):
                source = f"{scheme}{bucket}/{label.replace(' ', '')}"
                fill(source, count, size, f"{scheme}{label}")
                print(f"  {scheme:6s} {label:>6s}: {bytes_read_per_instance(scheme, source, count) / 1024:6.1f} KB")

        cli = [sys.executable, "-m", "dicom_transfer.pipelines.cli", "copy", "--errors", "/dev/null",
               "--summary", str(work / "s.json")]
        commands = {
            "naive gcsfs loop": lambda src, dst: [sys.executable, "-c", NAIVE_LOOP, src, dst],
            "dicom-transfer copy": lambda src, dst: [*cli, "--input", src, "--output", dst],
        }
        for latency in (0.0, args.latency_ms / 1000):
            where = "bare emulator (loopback)" if not latency else f"{latency * 1000:.0f} ms per request"
            for label, count, size in (("512 KB", args.count, 512 << 10), ("20 MB", args.large_count, 20 << 20)):
                print(f"\nThroughput, {count} instances of {label}, gs:// to gs://, {where}:")
                rates = {}
                for name, make in commands.items():
                    total, startup, rates[name], server = marginal_rate(make, count, size, work, latency)
                    print(f"  {name:22s} total {total:6.2f} s  start-up {startup:5.2f} s  "
                          f"{rates[name]:7.1f} instances/s (marginal)  emulator CPU {server * 1000:5.1f} ms/instance")
                ratio = rates["dicom-transfer copy"] / rates["naive gcsfs loop"]
                print(f"  dicom-transfer copy = {ratio:.2f} x the naive loop (target >= 3)")
    finally:
        gcs.stop()
        azurite.stop()


if __name__ == "__main__":
    main()
