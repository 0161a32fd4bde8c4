"""`migrate --dimse-source`: a PACS (Orthanc's DICOM port, dcmqrscp, a faulty pynetdicom SCP)
to a second Orthanc's DICOMweb in one run, checked through that Orthanc's REST API."""

from __future__ import annotations

import io

import pytest
from dimse_servers import CALLING_AE, RECEIVER_AE, FaultyQrScp, dataset_bytes
from servers import Orthanc
from test_dimse import (
    RANGE,
    digest,
    expected_in_range,
    make_archive,
    pacs,  # noqa: F401 - the PACS fixture (Orthanc and dcmqrscp)
    series_counts_by_c_find,
)

from dicom_transfer.sample import uid_for

pytest.importorskip("pynetdicom")
pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def destination_server(tmp_path_factory):
    server = Orthanc(tmp_path_factory.mktemp("orthanc-dicomweb")).start()
    yield server
    server.stop()


@pytest.fixture
def destination(destination_server):
    destination_server.delete_instances()
    return destination_server


def held(server: Orthanc) -> dict[tuple[str, str, str], str]:
    """(study, series, sop) -> SHA-256 of the data set (after group 0002) of what it stores."""
    from pydicom import dcmread

    result = {}
    for data in server.stored_files().values():
        ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
        result[(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))] = \
            digest(dataset_bytes(data))
    return result


def per_series(keys) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for study, series, _ in keys:
        counts[(study, series)] = counts.get((study, series), 0) + 1
    return counts


@pytest.mark.parametrize("retrieval", ["c-get", "c-move"])
def test_pacs_to_dicomweb_in_one_run_then_rerun_moves_nothing(pacs, retrieval, destination,  # noqa: F811
                                                              migrate_cli, tmp_path):
    server, receiver_port, made = pacs
    move = ["--move-destination", RECEIVER_AE, "--move-listen", f"127.0.0.1:{receiver_port}",
            "--move-staging", str(tmp_path / "staging")] if retrieval == "c-move" else []
    args = ["--dimse-source", server.address, "--calling-ae", CALLING_AE, "--dicomweb-url", destination.dicomweb,
            "--all", "--study-date", RANGE, "--date-chunk-days", "2", *move]
    run = migrate_cli(*args)
    assert run.status == 0, (run.out, run.errors)
    expected = {tuple(path.removesuffix(".dcm").split("/")): sha for path, sha in expected_in_range(made).items()}
    got = held(destination)
    assert got == expected  # every instance of the range, data set bytes as the PACS holds them
    assert run.counter["success"] == len(expected) == 12
    in_range = {study for study, _, _ in expected}
    assert per_series(got) == {k: v for k, v in series_counts_by_c_find(server.address).items() if k[0] in in_range}

    again = migrate_cli(*args)
    assert again.status == 0, again.errors
    assert (again.counter["success"], again.counter["unchanged"]) == (0, len(expected))
    assert held(destination) == expected
    if retrieval == "c-move":  # what was staged was taken: nothing is left but the journal's folders
        assert not [p for p in (tmp_path / "staging").rglob("*") if p.is_file()]


@pytest.mark.parametrize("fault", ["failure-status", "abort"])
def test_a_pacs_fault_is_one_record_and_the_rest_arrives(fault, destination, migrate_cli, tmp_path):
    made = make_archive(tmp_path / "files", implicit=False)
    failing = uid_for("dimse", "a", 1, 2)
    scp = FaultyQrScp(sorted((tmp_path / "files").glob("*.dcm")),
                      fail_sop=failing if fault == "failure-status" else None,
                      abort_at=4 if fault == "abort" else None).start()
    try:
        run = migrate_cli("--dimse-source", scp.address, "--calling-ae", CALLING_AE,
                          "--dicomweb-url", destination.dicomweb, "--all", "--study-date", RANGE)
    finally:
        scp.stop()
    expected = {tuple(path.removesuffix(".dcm").split("/")): sha for path, sha in expected_in_range(made).items()}
    got = held(destination)
    assert all(got[key] == expected[key] for key in got)  # what arrived is intact
    assert run.counter["failure"] == len(run.errors)
    if fault == "failure-status":
        assert run.status == 1
        where = f"{uid_for('dimse', 'a')}/{uid_for('dimse', 'a', 1)}/{failing}"
        assert [e["Identifier"] for e in run.errors] == [where]
        assert "0xC000" in run.errors[0]["Error"]
        assert set(got) == set(expected) - {k for k in expected if k[2] == failing}
    else:  # what the aborted association did not deliver is retrieved on a new one
        assert run.status == 0, run.errors
        assert got == expected


def test_migrate_refuses_both_sources_and_neither(destination, capsys):
    from dicom_transfer.pipelines.cli import main

    assert main(["migrate", "--dicomweb-url", destination.dicomweb, "--all"]) == 2
    assert "--source-dicomweb-url URL or --dimse-source" in capsys.readouterr().err
    assert main(["migrate", "--dimse-source", "dimse://X@127.0.0.1:1", "--source-dicomweb-url",
                 destination.dicomweb, "--dicomweb-url", destination.dicomweb, "--all"]) == 2
    assert "not both" in capsys.readouterr().err
