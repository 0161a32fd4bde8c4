"""DIMSE against real peers: Orthanc's DICOM server and dcmtk's dcmqrscp as PACS, the run's own
pynetdicom receiver for C-MOVE, and a pynetdicom storage SCP with injected faults."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import requests
from conftest import Run
from dimse_servers import (
    CALLING_AE,
    RECEIVER_AE,
    Dcmqrscp,
    FaultyQrScp,
    FaultyStorageScp,
    OrthancPacs,
    dataset_bytes,
)
from servers import free_port

from dicom_transfer.pipelines.cli import main
from dicom_transfer.sample import instance_bytes, uid_for

pytest.importorskip("pynetdicom")
pytestmark = pytest.mark.servers  # every test here starts a real DIMSE peer

# study -> date; the last one is outside the exported range
DATES = {"a": "20240101", "b": "20240103", "c": "20240120"}
RANGE = "20240101-20240105"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_archive(root: Path, implicit: bool) -> dict[tuple[str, str, str], bytes]:
    """3 studies x 2 series x 3 instances; with ``implicit``, one series in implicit VR (its syntax
    must be kept)."""
    root.mkdir(parents=True, exist_ok=True)
    made = {}
    for name, date in DATES.items():
        study = uid_for("dimse", name)
        for se in range(2):
            series = uid_for("dimse", name, se)
            for n in range(3):
                sop = uid_for("dimse", name, se, n)
                data = instance_bytes(study, series, sop, study_date=date, instance_number=n + 1,
                                      implicit=implicit and name == "b" and se == 1, pixel_bytes=2048 + 512 * n)
                made[(study, series, sop)] = data
                path = root / f"{name}-{se}-{n}.dcm"
                path.write_bytes(data)
    return made


@pytest.fixture(scope="module", params=["orthanc", "dcmqrscp"])
def pacs(request, tmp_path_factory):
    """A PACS holding an archive, the port its move destination (our receiver) listens on, and
    the archive's bytes. dcmqrscp sends every instance of a SOP class in the first syntax accepted
    for it (converting between uncompressed syntaxes: DIMSE has no way to ask for the stored one),
    so its archive is all explicit VR; Orthanc's has an implicit VR series, which must arrive as is."""
    receiver_port = free_port()
    directory = tmp_path_factory.mktemp(request.param)
    root = directory / "files"
    made = make_archive(root, implicit=request.param == "orthanc")
    if request.param == "orthanc":
        server = OrthancPacs(directory, receiver_port).start()
        for data in made.values():
            server.upload(data)
    else:
        server = Dcmqrscp(directory, receiver_port)
        server.load(sorted(root.glob("*.dcm")))
        server.start()
    yield server, receiver_port, made
    server.stop()


def export(tmp_path: Path, capsys, *args: str, op: str = "op1") -> Run:
    out = tmp_path / "out"
    status = main(["export", "--calling-ae", CALLING_AE, "--output", str(out), "--operation-id", op, *args])
    return Run(status, capsys.readouterr().out, out / ".dicom-transfer" / op)


def exported(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of the data set (after the file meta, which a receiver rebuilds)."""
    return {str(p.relative_to(root)): digest(dataset_bytes(p.read_bytes())) for p in root.rglob("*.dcm")
            if ".dicom-transfer" not in p.parts}


def expected_in_range(made) -> dict[str, str]:
    wanted = {uid_for("dimse", name) for name, date in DATES.items() if "20240101" <= date <= "20240105"}
    return {f"{k[0]}/{k[1]}/{k[2]}.dcm": digest(dataset_bytes(v)) for k, v in made.items() if k[0] in wanted}


def series_counts_by_c_find(address: str) -> dict[tuple[str, str], int]:
    """Instances per series as the PACS's own C-FIND reports them (pynetdicom, independently)."""
    from pydicom.dataset import Dataset
    from pynetdicom import AE

    from dicom_transfer.dimse import parse_peer_address

    peer = parse_peer_address(address)
    ae = AE(ae_title=CALLING_AE)
    ae.add_requested_context("1.2.840.10008.5.1.4.1.2.2.1")
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title)
    counts: dict[tuple[str, str], int] = {}
    try:
        for name in DATES:
            query = Dataset()
            query.QueryRetrieveLevel = "IMAGE"
            query.StudyInstanceUID = uid_for("dimse", name)
            query.SeriesInstanceUID = ""
            query.SOPInstanceUID = ""
            for status, identifier in assoc.send_c_find(query, "1.2.840.10008.5.1.4.1.2.2.1"):
                if status.Status in (0xFF00, 0xFF01):
                    key = (str(identifier.StudyInstanceUID), str(identifier.SeriesInstanceUID))
                    counts[key] = counts.get(key, 0) + 1
    finally:
        assoc.release()
    return counts


def per_series(paths) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for path in paths:
        study, series, _ = path.split("/")
        counts[(study, series)] = counts.get((study, series), 0) + 1
    return counts


@pytest.mark.parametrize("retrieval", ["c-get", "c-move"])
def test_export_a_study_date_range(pacs, retrieval, tmp_path, capsys):
    server, receiver_port, made = pacs
    move = ["--move-destination", RECEIVER_AE, "--move-listen", f"127.0.0.1:{receiver_port}"] \
        if retrieval == "c-move" else []
    args = ["--dimse-source", server.address, "--all", "--study-date", RANGE, "--date-chunk-days", "2", *move]
    run = export(tmp_path, capsys, *args)
    assert run.status == 0, (run.out, run.errors)
    expected = expected_in_range(made)
    got = exported(tmp_path / "out")
    assert got == expected  # every instance, data set bytes as the source's (implicit VR kept)
    assert run.counter["success"] == len(expected) == 12
    pacs_counts = series_counts_by_c_find(server.address)
    assert per_series(got) == {k: v for k, v in pacs_counts.items() if k[0] in {p.split("/")[0] for p in got}}

    again = export(tmp_path, capsys, *args, op="op2")
    assert again.status == 0
    assert (again.counter["success"], again.counter["unchanged"]) == (0, len(expected))


def test_export_by_identifiers_and_unknown_ones(pacs, tmp_path, capsys):
    server, _, made = pacs
    study = uid_for("dimse", "c")
    series = uid_for("dimse", "a", 1)
    run = export(tmp_path, capsys, "--dimse-source", server.address, "--identifier", study,
                 "--identifier", f"{uid_for('dimse', 'a')}/{series}", "--identifier", "1.2.3.4")
    assert run.status == 1
    assert [e["Identifier"] for e in run.errors] == ["1.2.3.4"]
    assert "not found" in run.errors[0]["Error"]
    expected = {f"{k[0]}/{k[1]}/{k[2]}.dcm" for k in made if k[0] == study or k[1] == series}
    assert set(exported(tmp_path / "out")) == expected


def test_c_store_into_orthanc_then_rerun_is_unchanged(tmp_path, capsys):
    receiver_port = free_port()
    server = OrthancPacs(tmp_path / "orthanc", receiver_port).start()
    try:
        source = tmp_path / "in"
        source.mkdir()
        sent = {}
        for n in range(1000):  # the size: 1,000 instances, each checked on the PACS
            study, series = uid_for("store", n % 3), uid_for("store", n % 3, n % 6)
            sop = uid_for("store", "sop", n)
            data = instance_bytes(study, series, sop, instance_number=n, implicit=n % 10 == 0, pixel_bytes=1024)
            (source / f"{n}.dcm").write_bytes(data)
            sent[sop] = data

        def run_import(op: str) -> Run:
            reports = tmp_path / "reports" / op
            status = main(["import", "--input", str(source), "--dimse-destination", server.address,
                           "--calling-ae", CALLING_AE, "--operation-id", op,
                           "--errors", str(reports / "errors.log"), "--summary", str(reports / "summary.json")])
            return Run(status, capsys.readouterr().out, reports)

        first = run_import("imp1")
        assert first.status == 0, first.errors
        assert first.counter["success"] == len(sent)
        held = {}
        with requests.Session() as orthanc:
            for instance in orthanc.get(f"{server.url}/instances", params={"expand": 1}, timeout=60).json():
                data = orthanc.get(f"{server.url}/instances/{instance['ID']}/file", timeout=30).content
                held[instance["MainDicomTags"]["SOPInstanceUID"]] = digest(dataset_bytes(data))
        assert held == {sop: digest(dataset_bytes(data)) for sop, data in sent.items()}
        # the reconciliation asked the PACS (image-level C-FIND) about each of the 6 series
        section = first.summary["reconciliation"]
        assert (section["series"], section["complete"], section["destinationChecked"]) == (6, 6, True)

        again = run_import("imp2")
        assert again.status == 0
        assert (again.counter["success"], again.counter["unchanged"]) == (0, len(sent))
    finally:
        server.stop()


def _import_into(scp: FaultyStorageScp, tmp_path: Path, capsys, count: int = 24, *options: str) -> tuple[Run, dict]:
    source = tmp_path / "in"
    source.mkdir(exist_ok=True)
    sent = {}
    for n in range(count):
        sop = uid_for("faults", n)
        data = instance_bytes(uid_for("faults"), uid_for("faults", n % 2), sop, instance_number=n)
        (source / f"{n}.dcm").write_bytes(data)
        sent[sop] = data
    reports = tmp_path / "reports"
    status = main(["import", "--input", str(source), "--dimse-destination", scp.address, *options,
                   "--calling-ae", CALLING_AE, "--operation-id", "faults",
                   "--errors", str(reports / "errors.log"), "--summary", str(reports / "summary.json")])
    captured = capsys.readouterr()
    run = Run(status, captured.out, reports)
    run.log = captured.err
    return run, sent


@pytest.mark.parametrize("fault", ["failure-status", "abort", "refuse-half", "warning"])
def test_c_store_faults_lose_nothing_else(fault, tmp_path, capsys):
    failing = uid_for("faults", 5)
    scp = FaultyStorageScp(fail_sops={failing} if fault == "failure-status" else set(),
                           warn_sops={failing} if fault == "warning" else set(),
                           abort_at=7 if fault == "abort" else None,
                           reject_every_other=fault == "refuse-half").start()
    try:
        run, sent = _import_into(scp, tmp_path, capsys)
    finally:
        scp.stop()
    stored = {sop: digest(data) for sop, data in scp.stored.items()}
    assert all(stored[sop] == digest(dataset_bytes(sent[sop])) for sop in stored)
    failed = [e["Identifier"] for e in run.errors]
    assert run.counter["failure"] == len(failed)
    assert run.counter["success"] == len(stored)
    if fault == "failure-status":
        assert run.status == 1 and len(failed) == 1 and failing in failed[0]
        assert "0xA700" in run.errors[0]["Error"]
        assert set(stored) == set(sent) - {failing}
    elif fault == "warning":  # stored: a success, counted and logged as a warning, not a failure
        assert run.status == 0 and set(stored) == set(sent)
        assert [line.split(" WARNING ", 1)[1] for line in run.log.splitlines() if "0xB007" in line] == [
            f"{tmp_path / 'in' / '5.dcm'}: C-STORE answered 0xB007 (warning: data set does not match SOP class)"]
    else:  # the instance being sent when the association went away is tried again on a new one
        assert run.status == 0, run.errors
        assert set(stored) == set(sent)
        if fault == "refuse-half":
            assert scp.associations >= 3


@pytest.mark.parametrize("address, message", [
    ("dimse://ORTHANC@127.0.0.1:{closed}", "cannot connect"),
    ("dimse://WRONG-AE@127.0.0.1:{pacs}", "rejected the association"),
])
def test_c_echo_failure_stops_the_run_with_exit_status_2(address, message, tmp_path, capsys):
    server = OrthancPacs(tmp_path / "orthanc", free_port()).start()
    try:
        target = address.format(closed=free_port(), pacs=server.dicom_port)
        status = main(["export", "--dimse-source", target, "--calling-ae", CALLING_AE, "--all",
                       "--output", str(tmp_path / "out"), "--dimse-timeout", "5"])
    finally:
        server.stop()
    assert status == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("fault", ["failure-status", "abort", "refuse-half"])
def test_c_get_faults_lose_nothing_else(fault, tmp_path, capsys):
    made = make_archive(tmp_path / "files", implicit=False)
    failing = uid_for("dimse", "a", 1, 2)
    scp = FaultyQrScp(sorted((tmp_path / "files").glob("*.dcm")),
                      fail_sop=failing if fault == "failure-status" else None,
                      abort_at=4 if fault == "abort" else None,
                      reject_every_other=fault == "refuse-half").start()
    try:
        run = export(tmp_path, capsys, "--dimse-source", scp.address, "--all", "--study-date", RANGE)
    finally:
        scp.stop()
    expected = expected_in_range(made)
    got = exported(tmp_path / "out")
    assert all(got[path] == expected[path] for path in got)  # what arrived is intact
    assert run.counter["failure"] == len(run.errors)
    if fault == "failure-status":
        assert run.status == 1
        where = f"{uid_for('dimse', 'a')}/{uid_for('dimse', 'a', 1)}/{failing}"
        assert [e["Identifier"] for e in run.errors] == [where]
        assert "0xC000" in run.errors[0]["Error"]
        assert set(got) == set(expected) - {p for p in expected if p.endswith(f"/{failing}.dcm")}
    else:  # what the broken or refused association did not deliver is retrieved on a new one
        assert run.status == 0, run.errors
        assert got == expected


def test_c_move_never_takes_an_earlier_runs_journal_for_this_one(pacs, tmp_path, capsys):
    server, receiver_port, made = pacs
    study = uid_for("dimse", "a")
    journal = tmp_path / "out" / ".dicom-transfer" / "received"
    first = export(tmp_path, capsys, "--dimse-source", server.address, "--identifier", study,
                   "--move-destination", RECEIVER_AE, "--move-listen", f"127.0.0.1:{receiver_port}")
    assert first.status == 0 and first.counter["success"] == 6
    assert len(list(journal.rglob("*.json"))) == 6
    # no receiver listens now: the PACS cannot deliver, whatever the journal said last time
    again = export(tmp_path, capsys, "--dimse-source", server.address, "--identifier", study,
                   "--move-destination", RECEIVER_AE, "--move-journal", str(journal), op="op2")
    assert again.status == 1
    assert (again.counter["success"], again.counter["unchanged"], again.counter["failure"]) == (0, 0, 6)
    assert all(e["Stage"] == "retrieve" for e in again.errors)


@pytest.mark.parametrize("cap", [1, 3])
def test_associations_stay_within_the_cap(cap, tmp_path, capsys):
    scp = FaultyStorageScp().start()
    try:
        run, sent = _import_into(scp, tmp_path, capsys, 96, "--max-associations", str(cap))
    finally:
        scp.stop()
    assert run.status == 0 and set(scp.stored) == set(sent)
    # 48 instances per series: up to 3 lanes of 16 at once when allowed, never more than the cap
    assert scp.most_open <= cap and scp.most_open >= min(cap, 2)


def test_c_store_of_instances_larger_than_the_peers_pdu(tmp_path, capsys):
    """C-STORE requests are framed by the product: a data set over many PDUs (Orthanc takes 16 KB
    ones), of odd and even lengths, arrives byte for byte."""
    server = OrthancPacs(tmp_path / "orthanc", free_port()).start()
    try:
        source = tmp_path / "in"
        source.mkdir()
        sent = {}
        for n, pixels in enumerate((16384 - 300, 16384, 300_001, 1_000_000)):
            study, series, sop = uid_for("large"), uid_for("large", 0), uid_for("large", "sop", n)
            data = instance_bytes(study, series, sop, instance_number=n, implicit=n % 2 == 1, pixel_bytes=pixels)
            (source / f"{n}.dcm").write_bytes(data)
            sent[sop] = digest(dataset_bytes(data))
        reports = tmp_path / "reports"
        status = main(["import", "--input", str(source), "--dimse-destination", server.address,
                       "--calling-ae", CALLING_AE, "--errors", str(reports / "errors.log"),
                       "--summary", str(reports / "summary.json")])
        assert status == 0, capsys.readouterr()
        held = {}
        with requests.Session() as orthanc:
            for instance in orthanc.get(f"{server.url}/instances", params={"expand": 1}, timeout=60).json():
                data = orthanc.get(f"{server.url}/instances/{instance['ID']}/file", timeout=30).content
                held[instance["MainDicomTags"]["SOPInstanceUID"]] = digest(dataset_bytes(data))
        assert held == sent
    finally:
        server.stop()
