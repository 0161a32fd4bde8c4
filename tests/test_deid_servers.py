"""De-identification on the way between servers: `migrate --deidentify basic` between two real
Orthanc servers, and `export --dimse-source ... --deidentify basic` from Orthanc's DICOM port."""

from __future__ import annotations

import csv
import io
import json
import stat

import pydicom
import pytest
from conftest import Run
from dimse_servers import CALLING_AE, Dcmqrscp, OrthancPacs
from servers import Orthanc, free_port
from test_deid_cli import DEID, FRAME_OF_REFERENCE, KEY, PHI, SERIES, SOPS, STUDY, referencing_instance

from dicom_transfer.deid.pseudonyms import Pseudonyms
from dicom_transfer.pipelines.cli import main
from dicom_transfer.sample import instance_bytes, uid_for

pytestmark = pytest.mark.servers
ORIGINAL_UIDS = [STUDY, FRAME_OF_REFERENCE, *SERIES.values(), *SOPS["A"], *SOPS["B"]]
# An ultrasound instance without BurnedInAnnotation NO: refused, one failure record.
US = tuple(uid_for("deid-servers", "us", n) for n in range(3))


def ultrasound() -> bytes:
    ds = pydicom.dcmread(io.BytesIO(instance_bytes(*US, patient_id="MRN-0042")))
    ds.Modality = "US"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """Orthanc as a DICOMweb server and a PACS, holding the two series that reference each
    other (6 instances) and one ultrasound instance."""
    server = OrthancPacs(tmp_path_factory.mktemp("deid-source"), free_port()).start()
    for name in SERIES:
        for n in range(3):
            server.upload(referencing_instance(name, n))
    server.upload(ultrasound())
    yield server
    server.stop()


@pytest.fixture(scope="module")
def destination(tmp_path_factory):
    server = Orthanc(tmp_path_factory.mktemp("deid-destination")).start()
    yield server
    server.stop()


@pytest.fixture
def key_env(monkeypatch):
    monkeypatch.setenv("DEID_KEY", KEY)


def run_cli(tmp_path, capsys, *args: str, op: str) -> Run:
    reports = tmp_path / "reports" / op
    status = main([*args, "--operation-id", op, "--errors", str(reports / "errors.log"),
                   "--summary", str(reports / "summary.json")])
    captured = capsys.readouterr()
    return Run(status, captured.out, reports, captured.err)


def check_deidentified(files: list[bytes], mapping) -> list[pydicom.Dataset]:
    """No identifying string and no original UID in the bytes, references resolve among the
    instances, the mapping table has one row per original identifier (mode 0600)."""
    everything = b"".join(files)
    for text in [*PHI, *ORIGINAL_UIDS]:
        assert text.encode() not in everything, text
    assert KEY.encode() not in everything
    written = [pydicom.dcmread(io.BytesIO(data)) for data in files]
    sops = {ds.SOPInstanceUID: ds for ds in written}
    assert len(sops) == 6
    for ds in written:
        assert ds.PatientIdentityRemoved == "YES" and ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        for item in ds.ReferencedImageSequence:
            assert sops[item.ReferencedSOPInstanceUID].SeriesInstanceUID != ds.SeriesInstanceUID
    assert written[0].StudyInstanceUID == Pseudonyms(KEY.encode()).uid(STUDY)
    rows = list(csv.DictReader(mapping.open()))
    assert sorted(r["original"] for r in rows) == sorted({*ORIGINAL_UIDS, "MRN-0042"})
    assert stat.S_IMODE(mapping.stat().st_mode) == 0o600
    return written


def test_migrate_deidentifies_and_a_rerun_finds_everything_unchanged(source, destination, tmp_path, capsys,
                                                                     key_env):
    """The destination holds the keyed pseudonyms: migrate compares and verifies by them."""
    mapping = tmp_path / "mapping.csv"
    args = ["migrate", "--source-dicomweb-url", source.dicomweb, "--dicomweb-url", destination.dicomweb,
            "--identifier", STUDY, "--identifier", US[0], *DEID, "--deid-mapping", str(mapping)]
    first = run_cli(tmp_path, capsys, *args, "--verify-bytes", "--direct_running_mode", "multi_processing",
                    "--direct_num_workers", "2", op="m1")
    assert first.status == 1, first.out  # the ultrasound instance
    assert (first.counter["success"], first.counter["deidentified"], first.counter["failure"]) == (6, 6, 1)
    assert [e["Identifier"] for e in first.errors] == ["/".join(US)]
    assert "BurnedInAnnotation" in first.errors[0]["Error"] and first.errors[0]["Stage"] == "deidentify"
    summary = json.loads((first.report_dir / "summary.json").read_text())
    assert summary["deidentification"]["profile"] == "basic"
    stored = destination.stored_files()
    check_deidentified(list(stored.values()), mapping)
    table = mapping.read_bytes()

    again = run_cli(tmp_path, capsys, *args, op="m2")
    assert (again.counter["success"], again.counter["unchanged"], again.counter.get("deidentified", 0)) == (0, 6, 0)
    assert destination.stored_files() == stored
    assert mapping.read_bytes() == table  # earlier rows kept, nothing repeated

    new_sop = Pseudonyms(KEY.encode()).uid(SOPS["B"][1])
    destination.delete_instances({new_sop})  # what the destination lost comes back, the same bytes
    third = run_cli(tmp_path, capsys, *args, op="m3")
    assert (third.counter["success"], third.counter["unchanged"]) == (1, 5)
    assert destination.stored_files() == stored
    logs = "".join(p.read_text() for p in (tmp_path / "reports").rglob("*.*")) + first.out + again.out
    for text in PHI[:4] + [KEY]:
        assert text not in logs, text


@pytest.fixture(params=["orthanc", "dcmqrscp"])
def pacs(request, source, tmp_path):
    """The source Orthanc's DICOM port, or dcmtk's dcmqrscp holding the same two series."""
    if request.param == "orthanc":
        yield source
        return
    files = []
    for name in SERIES:
        for n in range(3):
            files.append(tmp_path / "pacs" / f"{name}{n}.dcm")
            files[-1].parent.mkdir(exist_ok=True)
            files[-1].write_bytes(referencing_instance(name, n))
    server = Dcmqrscp(tmp_path / "pacs", free_port())
    server.load(files)
    yield server.start()
    server.stop()


def test_export_from_a_pacs_deidentifies_what_c_get_brings(pacs, tmp_path, capsys, key_env):
    out, mapping = tmp_path / "out", tmp_path / "mapping.csv"
    args = ["export", "--dimse-source", pacs.address, "--calling-ae", CALLING_AE, "--identifier", STUDY,
            "--output", str(out), *DEID, "--deid-mapping", str(mapping)]
    run = run_cli(tmp_path, capsys, *args, op="e1")
    assert run.status == 0, run.err
    assert (run.counter["success"], run.counter["deidentified"]) == (6, 6)
    files = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*.dcm") if ".dicom-transfer" not in p.parts}
    for path, ds in zip(files, check_deidentified(list(files.values()), mapping), strict=True):
        assert path == f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
    assert not any((out / ".dicom-transfer").rglob("*.dcm")) if (out / ".dicom-transfer").exists() else True

    again = run_cli(tmp_path, capsys, *args, op="e2")
    assert (again.status, again.counter["success"], again.counter["unchanged"]) == (0, 0, 6)


def test_migrate_from_a_pacs_deidentifies_what_c_get_brings(source, tmp_path, capsys, key_env):
    """`migrate --dimse-source` de-identifies in the same per-series stage as from DICOMweb; with
    C-MOVE it is refused (the receiver would stage identifiable data outside the pipeline)."""
    destination = Orthanc(tmp_path / "dicomweb").start()
    try:
        mapping = tmp_path / "mapping.csv"
        args = ["migrate", "--dimse-source", source.address, "--calling-ae", CALLING_AE,
                "--dicomweb-url", destination.dicomweb, "--identifier", STUDY, *DEID, "--deid-mapping", str(mapping)]
        run = run_cli(tmp_path, capsys, *args, op="d1")
        assert run.status == 0, (run.out, run.err)
        assert (run.counter["success"], run.counter["deidentified"]) == (6, 6)
        stored = destination.stored_files()
        check_deidentified(list(stored.values()), mapping)
        again = run_cli(tmp_path, capsys, *args, op="d2")
        assert (again.status, again.counter["success"], again.counter["unchanged"]) == (0, 0, 6)
        assert destination.stored_files() == stored
        moved = run_cli(tmp_path, capsys, *args, "--move-destination", "DT-RECEIVER", "--move-listen",
                        f"127.0.0.1:{free_port()}", op="d3")
        assert moved.status == 2 and "--move-destination" in moved.err
    finally:
        destination.stop()
