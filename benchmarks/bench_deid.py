"""Benchmark `dicom-transfer copy --deidentify basic` against a plain pydicom loop, in one run.

The loop reads each file whole with pydicom, applies the same Table E.1-1 actions (the
project's own table, with keyed 2.25 UIDs) with ``Dataset.walk``, removes private tags and
saves it under its new UIDs. Each command runs on the full set and on a single file; the
single-file time (start-up) is subtracted, so the ratio compares marginal throughput (wall time,
and CPU time per file: user + system of the command and its children, which the load of other
processes on a shared machine disturbs less); each figure is the median of ``--repeat``
alternating runs. Then what the product's own per-file work costs outside Beam (validating the
input, the rewrite with its copy of the pixel data, validating the output, the link into place),
so that the rest of the pipeline's marginal CPU time is Beam's; and the peak RSS of
de-identifying one sparse 1 GB multi-frame instance.

    python benchmarks/bench_deid.py [--count 1000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_copy import make_files, with_code_from  # noqa: E402
from measure import Destinations, peak_rss_mb, timed_with_user_system  # noqa: E402

from dicom_transfer.deid.profile import Profile, ProfileOptions  # noqa: E402
from dicom_transfer.deid.pseudonyms import Pseudonyms  # noqa: E402
from dicom_transfer.deid.rewrite import Deidentifier  # noqa: E402
from dicom_transfer.io.atomic import link_unnamed, open_unnamed  # noqa: E402
from dicom_transfer.io.instances import HEAD  # noqa: E402
from dicom_transfer.part10 import read_head, validate_and_map, validate_part10  # noqa: E402
from dicom_transfer.sample import uid_for, write_large_instance  # noqa: E402

PYTHON = sys.executable
CLI = [PYTHON, "-m", "dicom_transfer.pipelines.cli"]
KEY = "benchmark-key-0123456789abcdef"
DEID = ["--deidentify", "basic", "--deid-key-env", "DEID_KEY", "--progress", "none"]
TWO_PROCESSES = ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"]

PYDICOM_LOOP = textwrap.dedent("""
    import hashlib, hmac, os, sys
    import pydicom
    from pydicom.dataelem import DataElement
    from dicom_transfer.deid.profile import Profile, ProfileOptions

    KEY = os.environ["DEID_KEY"].encode()
    profile = Profile(ProfileOptions())
    DUMMY = {"DA": "19000101", "TM": "000000", "DT": "19000101000000", "DS": "0", "IS": "0"}

    def uid(value):
        digest = hmac.new(KEY, b"uid\\x00" + str(value).encode(), hashlib.sha256).digest()
        return "2.25." + str(int.from_bytes(digest[:16], "big"))

    def act(ds, elem):
        action = profile.action(int(elem.tag))
        if action == "X":
            del ds[elem.tag]
        elif action == "Z":
            ds[elem.tag] = DataElement(elem.tag, elem.VR, [] if elem.VR == "SQ" else None)
        elif action == "D" and elem.VR not in ("SQ", "UI"):
            elem.value = DUMMY.get(elem.VR, "ANONYMIZED")
        elif action in ("U", "D") and elem.VR == "UI":
            elem.value = uid(elem.value)

    src, dst = sys.argv[1], sys.argv[2]
    for folder, _, names in os.walk(src):
        for name in names:
            ds = pydicom.dcmread(os.path.join(folder, name))
            ds.remove_private_tags()
            ds.walk(act)
            ds.PatientID = ds.PatientName = "DT" + uid(ds.PatientID)[5:25]
            ds.PatientIdentityRemoved = "YES"
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            target = os.path.join(dst, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID + ".dcm")
            os.makedirs(os.path.dirname(target), exist_ok=True)
            ds.save_as(target)
""")


BASELINE = "same, code of --baseline-src"


def commands(src: Path, dst: Path, baseline_src: str | None = None) -> dict[str, list[str]]:
    found = {
        "pydicom loop": [PYTHON, "-c", PYDICOM_LOOP, str(src), str(dst)],
        # the default: files de-identified by worker processes (one per core, up to 4)
        "dicom-transfer (worker processes)": [*CLI, "copy", "--input", str(src), "--output", str(dst), *DEID],
        "dicom-transfer (in-process)": [*CLI, "copy", "--input", str(src), "--output", str(dst), *DEID,
                                        "--processes", "1"],
        "dicom-transfer (multi_processing x 2)": [*CLI, "copy", "--input", str(src), "--output", str(dst), *DEID,
                                                  *TWO_PROCESSES],
    }
    if baseline_src:
        found[BASELINE] = [*with_code_from(baseline_src), "copy", "--input", str(src), "--output", str(dst), *DEID]
    return found


def marginal(work: Path, count: int, pixel_bytes: int, repeat: int,
             baseline_src: str | None = None) -> dict[str, tuple[float, ...]]:
    """Per command, the marginal wall time, CPU time, user time and system time per file: each
    the median of ``repeat`` alternating runs."""
    src, one, dst = work / "src", work / "one", work / "dst"
    size = make_files(src, count, pixel_bytes)
    make_files(one, 1, pixel_bytes)
    subprocess.run(["cat", *map(str, src.rglob("*.dcm"))], stdout=subprocess.DEVNULL)  # warm the cache
    print(f"{count} files of {size // count // 1024} KB ({size / 1e6:.0f} MB), median of {repeat} runs")
    runs: dict[tuple[str, str], list[tuple[float, ...]]] = {}
    destinations = Destinations(dst)
    for _ in range(repeat):
        for name in commands(src, dst, baseline_src):
            for what, source in (("full", src), ("start-up", one)):
                run = commands(source, destinations.next(), baseline_src)[name]
                wall, user, system = timed_with_user_system(run)
                runs.setdefault((name, what), []).append((wall, user + system, user, system))
    destinations.remove_all()
    median: dict[str, tuple[float, ...]] = {}
    for name in commands(src, dst, baseline_src):
        per_run = [tuple(max(f - s, 1e-9) / max(count - 1, 1) for f, s in zip(full, startup, strict=True))
                   for full, startup in zip(runs[(name, "full")], runs[(name, "start-up")], strict=True)]
        median[name] = tuple(map(statistics.median, zip(*per_run, strict=True)))
    for name, (wall, cpu, user, system) in median.items():
        print(f"  {name:30s} marginal {wall * 1e6:8.1f} us/file ({1 / wall:6.0f} files/s), "
              f"CPU {cpu * 1e6:8.1f} us/file (user {user * 1e6:6.1f}, system {system * 1e6:6.1f})")
    return median


def own_work(src: Path, out: Path, repeat: int) -> dict[str, float]:
    """CPU seconds per file of the product's own work outside Beam, step by step as
    ``DeidentifyFiles`` does it (medians of ``repeat`` runs): validating the input (the same
    walk maps its elements), the rewrite into an unnamed file (header and pixel data copy),
    validating the output (from the header the rewrite made in memory), linking it into place;
    and, for scale, a bare in-kernel copy of each
    file (what any tool pays to write the bytes, the loop too)."""
    deidentifier = Deidentifier(Profile(ProfileOptions()), Pseudonyms(KEY.encode()))
    files = sorted(src.rglob("*.dcm"))
    runs: dict[str, list[float]] = {}
    steps = ("validate and map input", "rewrite", "validate output", "link into place",
             "of which a bare copy of the file")
    for _ in range(repeat):
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        spent = dict.fromkeys(steps, 0.0)
        for number, path in enumerate(files):
            size = path.stat().st_size
            started = time.process_time()
            with open(path, "rb") as source:
                head = read_head(source, HEAD)
                header, elements = validate_and_map(source, size, head)
                checked = time.process_time()
                fd = open_unnamed(str(out))
                assert fd is not None
                with os.fdopen(fd, "w+b") as written:
                    result = deidentifier.rewrite(source, size, written, (), (header.transfer_syntax, elements),
                                                  head)
                    rewritten = time.process_time()
                    written.seek(0)
                    validate_part10(written, result.size, head=result.head or read_head(written, HEAD))
                    validated = time.process_time()
                    link_unnamed(fd, str(out / f"{number}.dcm"), overwrite=False)
            moved = time.process_time()
            with open(path, "rb") as source, open(out / f"{number}.copy", "wb") as copy:
                os.copy_file_range(source.fileno(), copy.fileno(), size)  # (Linux) the floor: the bytes alone
            copied = time.process_time()
            for what, seconds in zip(steps, (checked - started, rewritten - checked, validated - rewritten,
                                             moved - validated, copied - moved), strict=True):
                spent[what] += seconds
        for what, seconds in spent.items():
            runs.setdefault(what, []).append(seconds / len(files))
    shutil.rmtree(out, ignore_errors=True)
    return {what: statistics.median(values) for what, values in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--huge", type=int, default=1 << 30, help="bytes of pixel data of the large instance")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each command; the median counts")
    parser.add_argument("--baseline-src", default=None, metavar="DIR",
                        help="also run the code in DIR (an older checkout), alternated with this one")
    args = parser.parse_args()
    os.environ["DEID_KEY"] = KEY
    work = Path(args.workdir or tempfile.mkdtemp(prefix="dt-bench-deid-"))
    per_file = marginal(work, args.count, 512 * 1024 - 2048, args.repeat, args.baseline_src)
    own = own_work(work / "src", work / "own", args.repeat)

    huge_dir, tiny_dir = work / "huge", work / "tiny"
    huge_dir.mkdir()
    write_large_instance(huge_dir / "huge.dcm", uid_for("bench", 1), uid_for("bench", 2), uid_for("bench", 3),
                         pixel_bytes=args.huge)
    make_files(tiny_dir, 1, 1024)
    baseline = peak_rss_mb([*CLI, "copy", "--input", str(tiny_dir), "--output", str(work / "rss-tiny"), *DEID])
    peak = peak_rss_mb([*CLI, "copy", "--input", str(huge_dir), "--output", str(work / "rss-huge"), *DEID])
    written = next((work / "rss-huge").rglob("*.dcm")).stat().st_size
    shutil.rmtree(work)

    loop_wall, loop_cpu, *_ = per_file["pydicom loop"]
    print("\nSummary")
    for name in [n for n in per_file if n != "pydicom loop"]:
        wall, cpu, *_ = per_file[name]
        print(f"  {name}: {loop_wall / wall:.2f} x the pydicom loop's marginal throughput "
              f"({loop_cpu / cpu:.2f} x in CPU time per file)")
    ours = sum(own.values()) - own["of which a bare copy of the file"]
    pipeline = per_file["dicom-transfer (in-process)"][1]
    print(f"  own work per file outside Beam: {ours * 1e6:.0f} us CPU ("
          + ", ".join(f"{what} {seconds * 1e6:.0f}" for what, seconds in own.items())
          + f"); the rest of the in-process pipeline's {pipeline * 1e6:.0f} us: {(pipeline - ours) * 1e6:.0f} us "
          f"({(pipeline - ours) / pipeline:.0%}); at 2 x the loop, the whole pipeline would have "
          f"{loop_cpu / 2 * 1e6:.0f} us")
    print(f"  one {written / 2**30:.2f} GB multi-frame instance: peak RSS {peak:.0f} MB vs {baseline:.0f} MB "
          f"for one small file: growth {peak - baseline:.0f} MB")


if __name__ == "__main__":
    main()
