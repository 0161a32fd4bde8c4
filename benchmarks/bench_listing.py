"""Benchmark wildcard expansion over a large container: 100,000 objects on Azurite.

Fills a container with ``--objects`` small objects laid out like an archive (studies of series
of instances), then expands ``az://CONTAINER/**.dcm`` and ``az://CONTAINER/*/*/*.dcm`` in a fresh
process: seconds, objects found (each exactly once) and peak RSS. The store pages its listing
(5,000 names per page on Azure). Filling 100,000 objects takes Azurite ~16 minutes here.

    python benchmarks/bench_listing.py [--objects 100000] [--keep DIR]

``--keep DIR`` keeps Azurite's data in DIR; a later run with the same DIR and count skips the filling.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests")]
from measure import peak_rss_mb  # noqa: E402
from servers import Azurite  # noqa: E402

EXPAND = """
import sys, time
from dicom_transfer.io.listing import list_pattern
from dicom_transfer.wildcards import parse_pattern
started = time.perf_counter()
urls = [ref.url for ref in list_pattern(parse_pattern(sys.argv[1]))]
assert len(urls) == len(set(urls)) == int(sys.argv[2]), (len(urls), len(set(urls)))
print(f"{time.perf_counter() - started:.2f}")
"""


def name_of(n: int) -> str:
    return f"study{n // 1000:04d}/series{n // 100 % 10}/{n:06d}.dcm"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="keep Azurite's data here (and reuse it when filled)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="dt-bench-listing-"))
    azurite = Azurite(work / "azurite", str(HERE.parent / ".tools/node_modules/.bin/azurite-blob")).start()
    os.environ.update(azurite.env)
    try:
        from azure.storage.blob import ContainerClient

        container = ContainerClient.from_connection_string(azurite.connection_string, "archive")
        filled = (work / "filled").read_text() if (work / "filled").exists() else ""
        if filled != str(args.objects):
            if container.exists():
                container.delete_container()
                time.sleep(1)
            container.create_container()
            started = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                list(pool.map(lambda n: container.upload_blob(name_of(n), b"not read"), range(args.objects)))
            print(f"filled {args.objects:,} objects in {time.perf_counter() - started:.0f} s")
            (work / "filled").write_text(str(args.objects))
        for pattern in ("az://archive/**.dcm", "az://archive/*/*/*.dcm"):
            command = [sys.executable, "-c", EXPAND, pattern, str(args.objects)]
            started = time.perf_counter()
            rss = peak_rss_mb(command)
            elapsed = time.perf_counter() - started
            print(f"  {pattern:26s} {args.objects:,} objects, each once: {elapsed:6.1f} s "
                  f"({args.objects / elapsed:,.0f} objects/s, process start included), peak RSS {rss:.0f} MB")
    finally:
        azurite.stop()


if __name__ == "__main__":
    main()
