"""Benchmark DIMSE against Orthanc's DICOM port, side by side in one run.

C-STORE of N small instances (one study, 10 series), each to a fresh Orthanc:

1. dcmtk ``storescu``, one association, ``TCP_NODELAY=1`` (dcmtk reads it from the environment);
2. a plain pynetdicom loop: one association with ``TCP_NODELAY``, ``dcmread`` + ``send_c_store`` per file;
3. ``dicom-transfer import --dimse-destination`` (start-up subtracted: the same command on one file).

C-GET of the same study from one more Orthanc (loaded by storescu):

4. dcmtk ``getscu`` (one study-level C-GET, ``TCP_NODELAY=1``);
5. ``dicom-transfer export --dimse-source --identifier STUDY`` (start-up subtracted likewise);
6. its two DIMSE steps in-process, without Beam (the DoFns the pipeline runs): C-FIND of the
   study's instances (series, then image level), and their retrieval by series-level C-GETs,
   each instance validated and placed by the layout as it arrives;
7. ``dicom-transfer migrate --dimse-destination`` of that study from the same Orthanc's DICOMweb
   into a fresh Orthanc's DICOM port (start-up subtracted likewise).

getscu does one study-level C-GET and writes what comes; the export also enumerates the study
with C-FIND (to check per-series counts), validates and places each instance without ever
overwriting, and writes its manifest and reports.

Each is run ``--rounds`` times (default 3), interleaved; the best time of each counts.

    python benchmarks/bench_dimse.py [--count 1000] [--rounds 3] [--no-get | --no-store]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests"), str(HERE)]
from dimse_servers import CALLING_AE, OrthancPacs  # noqa: E402
from measure import timed  # noqa: E402
from servers import free_port  # noqa: E402

from dicom_transfer.sample import instance_bytes, uid_for  # noqa: E402

PYTHON = sys.executable
NODELAY = {**os.environ, "TCP_NODELAY": "1"}

LOOP_RACES: list[int] = []  # rounds in which the plain loop lost a response (and was run again)

# The plain loop: dcmread and send_c_store, with TCP_NODELAY (without it each store waits out a
# delayed ACK, ~40 ms). Sending from the path instead (STORE_SEND_CHUNKED_DATASET) is faster but
# hits pynetdicom's reactor race every few hundred stores here: send_c_store() reads the reactor's
# stale "paused" flag, the reactor takes the C-STORE response off the queue, and the loop waits
# out the DIMSE timeout (io/dimse.py's _Checkpoint is how the product avoids it). Reading with
# dcmread only makes it rarer.
PYNETDICOM_LOOP = textwrap.dedent("""
    import pathlib, socket, sys
    from pydicom import dcmread
    from pynetdicom import AE, evt
    def nodelay(event):
        event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    host, port, called, folder = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    ae = AE(ae_title="DT-TESTS")
    ae.dimse_timeout = 10  # a response lost to the race ends the run sooner
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.1.2.1")
    assoc = ae.associate(host, port, ae_title=called, evt_handlers=[(evt.EVT_CONN_OPEN, nodelay)])
    assert assoc.is_established
    for path in sorted(pathlib.Path(folder).rglob("*.dcm")):
        status = assoc.send_c_store(dcmread(path))
        assert status.Status == 0, status
    assoc.release()
""")


def make_instances(folder: Path, count: int, tag: str) -> str:
    folder.mkdir(parents=True)
    study = uid_for("bench-dimse", tag)
    for n in range(count):
        data = instance_bytes(study, uid_for("bench-dimse", tag, n % 10), uid_for("bench-dimse", tag, "sop", n),
                              instance_number=n, pixel_bytes=4096)
        (folder / f"{n:05d}.dcm").write_bytes(data)
    return study


def cli(*args: str) -> list[str]:
    return [PYTHON, "-m", "dicom_transfer.pipelines.cli", *args, "--calling-ae", CALLING_AE, "--progress", "none"]


def fresh_orthanc(work: Path, name: str) -> OrthancPacs:
    return OrthancPacs(work / name, free_port()).start()


def store_round(work: Path, many: Path, one: Path, count: int, round_: int) -> dict[str, float]:
    """Seconds of each C-STORE client for ``count`` instances, each to a fresh Orthanc (and of the
    product on one file, its start-up)."""
    seconds: dict[str, float] = {}
    server = fresh_orthanc(work, f"storescu-{round_}")
    try:
        seconds["storescu"] = timed(["storescu", "-aet", CALLING_AE, "-aec", server.ae_title, "+sd", "+r",
                                     "127.0.0.1", str(server.dicom_port), str(many)], env=NODELAY)
        assert server.count_instances() == count
    finally:
        server.stop()
    for attempt in range(3):  # a loop that hit pynetdicom's reactor race (see above) is run again
        server = fresh_orthanc(work, f"loop-{round_}-{attempt}")
        try:
            seconds["pynetdicom loop"] = timed([PYTHON, "-c", PYNETDICOM_LOOP, "127.0.0.1",
                                                str(server.dicom_port), server.ae_title, str(many)])
            break
        except SystemExit:
            LOOP_RACES.append(round_)
        finally:
            server.stop()
    server = fresh_orthanc(work, f"import-{round_}")
    try:
        reports = ["--errors", str(work / "r" / "errors.log"), "--summary", str(work / "r" / "summary.json")]
        seconds["start-up"] = timed(cli("import", "--input", str(one), "--dimse-destination", server.address,
                                        *reports))
        seconds["dicom-transfer import"] = timed(cli("import", "--input", str(many), "--dimse-destination",
                                                     server.address, *reports))
        assert server.count_instances() == count + 1
    finally:
        server.stop()
    return seconds


def dimse_steps(work: Path, server: OrthancPacs, study: str, count: int, round_: int) -> dict[str, float]:
    """Seconds of the export's C-FIND and C-GET steps in this process, without Beam."""
    from collections import defaultdict

    from dicom_transfer.dimse import parse_peer_address
    from dicom_transfer.io.dimse import DimseSettings
    from dicom_transfer.layout import Layout
    from dicom_transfer.resources import ResourcePath
    from dicom_transfer.transforms.dimse_source import _ExpandFn, _RetrieveFn

    settings = DimseSettings(parse_peer_address(server.address), CALLING_AE)
    expand = _ExpandFn(settings)
    retrieve = _RetrieveFn(settings, str(work / f"steps-{round_}"), Layout.parse("uid"), False, False, None, None)
    expand.setup()
    retrieve.setup()
    try:
        started = time.perf_counter()
        found = list(expand.process(ResourcePath(study)))
        found_at = time.perf_counter()
        series: dict = defaultdict(list)
        for key, value in found:
            series[key].append(value)
        outputs = [output for element in series.items() for output in retrieve.process(element)]
        done = time.perf_counter()
    finally:
        retrieve.teardown()
        expand.teardown()
    assert len(found) == len(outputs) == count and all(o.tag == "outcomes" for o in outputs)
    return {"C-FIND step": found_at - started, "C-GET step": done - found_at}


def get_round(work: Path, server: OrthancPacs, study: str, count: int, round_: int) -> dict[str, float]:
    """Seconds of getscu and of the product's C-GET export of the study (and of a one-instance one)."""
    out = work / f"getscu-{round_}"
    out.mkdir()
    seconds = {"getscu": timed(["getscu", "-aet", CALLING_AE, "-aec", server.ae_title, "-S",
                                "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                                "-od", str(out), "127.0.0.1", str(server.dicom_port)], env=NODELAY)}
    assert len(list(out.iterdir())) == count
    one_study = uid_for("bench-dimse", "one")
    seconds["export start-up"] = timed(cli("export", "--dimse-source", server.address, "--identifier", one_study,
                                           "--output", str(work / f"export-one-{round_}")))
    seconds["dicom-transfer export (C-GET)"] = timed(cli("export", "--dimse-source", server.address, "--identifier",
                                                         study, "--output", str(work / f"export-{round_}")))
    assert len(list((work / f"export-{round_}").rglob("*.dcm"))) == count
    seconds.update(dimse_steps(work, server, study, count, round_))
    destination = fresh_orthanc(work, f"migrate-{round_}")
    try:  # the same study from this Orthanc's DICOMweb into another one's DICOM port
        migrate = cli("migrate", "--source-dicomweb-url", server.dicomweb, "--dimse-destination",
                      destination.address, "--errors", str(work / "m" / "errors.log"),
                      "--summary", str(work / "m" / "summary.json"))
        seconds["migrate start-up"] = timed([*migrate, "--identifier", one_study])
        seconds["dicom-transfer migrate (WADO-RS -> C-STORE)"] = timed([*migrate, "--identifier", study])
        assert destination.count_instances() == count + 1
    finally:
        destination.stop()
    return seconds


def get_rounds(work: Path, many: Path, one: Path, study: str, count: int, rounds: int,
               best: dict[str, float]) -> None:
    """The C-GET comparison, from one Orthanc loaded by storescu; best times into ``best``."""
    server = fresh_orthanc(work, "get")
    try:
        subprocess.run(["storescu", "-aet", CALLING_AE, "-aec", server.ae_title, "+sd", "+r", "127.0.0.1",
                        str(server.dicom_port), str(many), str(one)], env=NODELAY, check=True, capture_output=True)
        assert server.count_instances() == count + 1
        for round_ in range(rounds):
            for name, seconds in get_round(work, server, study, count, round_).items():
                best[name] = min(best.get(name, seconds), seconds)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved rounds; the best time of each counts.")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--no-get", action="store_true", help="C-STORE only (skip the C-GET comparison).")
    choice.add_argument("--no-store", action="store_true", help="C-GET only (skip the C-STORE comparison).")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-dimse-"))
    count = args.count
    try:
        many, one = work / "many", work / "one"
        study = make_instances(many, count, "many")
        make_instances(one, 1, "one")
        best: dict[str, float] = {}
        if not args.no_store:
            for round_ in range(args.rounds):  # interleaved, best of each: a busy machine slows a run, never speeds it
                for name, seconds in store_round(work, many, one, count, round_).items():
                    best[name] = min(best.get(name, seconds), seconds)
        if not args.no_get:
            get_rounds(work, many, one, study, count, args.rounds, best)
        rates = {}
        if not args.no_store:
            rates["storescu"] = count / best["storescu"]
            rates["pynetdicom loop"] = count / best["pynetdicom loop"]
            rates["dicom-transfer import"] = count / max(best["dicom-transfer import"] - best["start-up"], 1e-3)
        if not args.no_get:
            rates["getscu"] = count / best["getscu"]
            rates["dicom-transfer export (C-GET)"] = count / max(best["dicom-transfer export (C-GET)"]
                                                                 - best["export start-up"], 1e-3)
            rates["  its C-FIND step"] = count / best["C-FIND step"]
            rates["  its C-GET step"] = count / best["C-GET step"]
            name = "dicom-transfer migrate (WADO-RS -> C-STORE)"
            rates[name] = count / max(best[name] - best["migrate start-up"], 1e-3)
        startup = best.get("start-up", best.get("export start-up", 0.0))
        print(f"{count} instances of ~4 KB, Orthanc on loopback (instances/s, best of {args.rounds} interleaved "
              f"rounds; dicom-transfer's start-up, {startup:.1f} s, subtracted)")
        for name, rate in rates.items():
            print(f"  {name:44s} {rate:8.1f}")
        if not args.no_store:
            print(f"C-STORE: {rates['dicom-transfer import'] / rates['storescu']:.2f} x storescu, "
                  f"{rates['dicom-transfer import'] / rates['pynetdicom loop']:.2f} x the pynetdicom loop")
        if not args.no_get:
            print(f"C-GET:   export {rates['dicom-transfer export (C-GET)'] / rates['getscu']:.2f} x getscu; "
                  f"its C-GET step {rates['  its C-GET step'] / rates['getscu']:.2f} x getscu, both steps "
                  f"{count / (best['C-FIND step'] + best['C-GET step']) / rates['getscu']:.2f} x getscu")
            if not args.no_store:
                print(f"migrate from DICOMweb into a PACS: "
                      f"{rates['dicom-transfer migrate (WADO-RS -> C-STORE)'] / rates['storescu']:.2f} x storescu "
                      "(which sends from local files)")
        if LOOP_RACES:
            print(f"The plain pynetdicom loop lost a C-STORE response to its own reactor {len(LOOP_RACES)} "
                  "time(s) and was run again.")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
