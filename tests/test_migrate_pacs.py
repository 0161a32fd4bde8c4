"""`migrate --dimse-destination`: a DICOMweb Orthanc (or a PACS) into a PACS over C-STORE, checked
through the receiving Orthanc's REST API, or what a faulty pynetdicom storage SCP kept."""

from __future__ import annotations

import io

import pytest
from dimse_servers import CALLING_AE, FaultyStorageScp, OrthancPacs, dataset_bytes
from servers import Orthanc, free_port
from test_dimse import (
    RANGE,
    digest,
    expected_in_range,
    make_archive,
    pacs,  # noqa: F401 - the PACS fixture (Orthanc and dcmqrscp)
)

from dicom_transfer.pipelines.cli import main
from dicom_transfer.sample import uid_for

pytest.importorskip("pynetdicom")
pytestmark = pytest.mark.servers

IMPLICIT_VR = "1.2.840.10008.1.2"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A DICOMweb Orthanc holding 3 studies x 2 series x 3 instances (one series in implicit VR),
    and those instances' bytes by (study, series, sop)."""
    directory = tmp_path_factory.mktemp("source")
    made = make_archive(directory / "files", implicit=True)
    server = Orthanc(directory).start()
    for data in made.values():
        server.upload(data)
    yield server, made
    server.stop()


@pytest.fixture(scope="module")
def pacs_server(tmp_path_factory):
    server = OrthancPacs(tmp_path_factory.mktemp("pacs"), free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def destination(pacs_server):
    pacs_server.delete_instances()
    return pacs_server


def held(server: Orthanc) -> dict[tuple[str, str, str], tuple[str, str]]:
    """(study, series, sop) -> (transfer syntax, SHA-256 of the data set after group 0002) of
    every instance the Orthanc keeps, through its REST API."""
    from pydicom import dcmread

    result = {}
    for data in server.stored_files().values():
        ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
        key = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
        result[key] = (str(ds.file_meta.TransferSyntaxUID), digest(dataset_bytes(data)))
    return result


def sent(made: dict) -> dict[tuple[str, str, str], tuple[str, str]]:
    from pydicom import dcmread

    return {key: (str(dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta.TransferSyntaxUID),
                  digest(dataset_bytes(data))) for key, data in made.items()}


def test_dicomweb_to_a_pacs_then_rerun_moves_nothing(source, destination, migrate_cli):
    server, made = source
    args = ["--source-dicomweb-url", server.dicomweb, "--dimse-destination", destination.address,
            "--calling-ae", CALLING_AE, "--all"]
    dry = migrate_cli(*args, "--dry-run")
    assert dry.status == 0, dry.errors
    assert dry.counter["success"] == len(made) and destination.count_instances() == 0

    run = migrate_cli(*args)
    assert run.status == 0, run.errors
    assert run.counter["success"] == len(made) == 18
    assert run.summary["destination"] == destination.address
    expected = sent(made)
    assert held(destination) == expected  # every instance, its own transfer syntax, the same data set
    assert sum(1 for syntax, _ in expected.values() if syntax == IMPLICIT_VR) == 3

    again = migrate_cli(*args)
    assert again.status == 0, again.errors
    assert (again.counter["success"], again.counter["unchanged"]) == (0, len(made))

    # what the PACS lost since is all that moves
    lost = {uid_for("dimse", "b", 1, 0), uid_for("dimse", "c", 0, 2)}
    destination.delete_instances(lost)
    third = migrate_cli(*args)
    assert third.status == 0, third.errors
    assert (third.counter["success"], third.counter["unchanged"]) == (2, len(made) - 2)
    assert held(destination) == expected


@pytest.mark.parametrize("fault", ["failure-status", "lost", "warning", "abort", "refuse-half"])
def test_a_c_store_fault_is_one_record_and_the_rest_arrives(fault, source, migrate_cli):
    server, made = source
    failing = uid_for("dimse", "a", 1, 2)
    scp = FaultyStorageScp(fail_sops={failing} if fault == "failure-status" else set(),
                           lose_sops={failing} if fault == "lost" else set(),
                           warn_sops={failing} if fault == "warning" else set(),
                           abort_at=5 if fault == "abort" else None,
                           reject_every_other=fault == "refuse-half").start()
    try:
        run = migrate_cli("--source-dicomweb-url", server.dicomweb, "--dimse-destination", scp.address,
                          "--calling-ae", CALLING_AE, "--all")
    finally:
        scp.stop()
    expected = {sop: digest(dataset_bytes(data)) for (_, _, sop), data in made.items()}
    stored = {sop: digest(data) for sop, data in scp.stored.items()}
    assert all(stored[sop] == expected[sop] for sop in stored)  # what arrived is intact
    assert run.counter["failure"] == len(run.errors)
    if fault in ("failure-status", "lost"):
        assert run.status == 1
        where = f"{uid_for('dimse', 'a')}/{uid_for('dimse', 'a', 1)}/{failing}"
        assert [e["Identifier"] for e in run.errors] == [where]
        if fault == "failure-status":
            assert run.errors[0]["Stage"] == "store" and "0xA700" in run.errors[0]["Error"]
        else:  # answered success, but the verifying C-FIND does not find it
            assert run.errors[0]["Stage"] == "verify"
            assert "C-STORE reported it stored, but the destination does not hold it" in run.errors[0]["Error"]
        assert set(stored) == set(expected) - {failing}
        assert run.counter["success"] == len(expected) - 1
        # the PACS, asked by C-FIND for the reconciliation, lacks that one instance
        section = run.summary["reconciliation"]
        assert (section["incomplete"], section["instancesMissing"]) == (1, 1)
    elif fault == "warning":  # stored: a success, logged as a warning, not a failure
        assert run.status == 0, run.errors
        assert stored == expected and run.counter["success"] == len(expected)
        assert [line.split(" WARNING ", 1)[1] for line in run.err.splitlines() if "0xB007" in line] == [
            f"{uid_for('dimse', 'a')}/{uid_for('dimse', 'a', 1)}/{failing}: C-STORE answered 0xB007 "
            "(warning: data set does not match SOP class)"]
    else:  # the instance being sent when the association went away is sent again on a new one
        assert run.status == 0, run.errors
        assert stored == expected
        if fault == "refuse-half":
            assert scp.associations >= 3


@pytest.mark.parametrize("address, message", [
    ("dimse://ORTHANC@127.0.0.1:{closed}", "cannot connect"),
    ("dimse://WRONG-AE@127.0.0.1:{pacs}", "rejected the association"),
])
def test_an_unusable_pacs_stops_the_run_with_exit_status_2(address, message, source, destination, tmp_path,
                                                           capsys):
    server, _ = source
    target = address.format(closed=free_port(), pacs=destination.dicom_port)
    status = main(["migrate", "--source-dicomweb-url", server.dicomweb, "--dimse-destination", target,
                   "--calling-ae", CALLING_AE, "--all", "--dimse-timeout", "5",
                   "--errors", str(tmp_path / "errors.log"), "--summary", str(tmp_path / "summary.json")])
    assert status == 2
    err = capsys.readouterr().err
    assert "C-ECHO failed" in err and message in err
    assert destination.count_instances() == 0


def test_destination_options_are_checked(source, destination, capsys):
    server, _ = source
    base = ["migrate", "--source-dicomweb-url", server.dicomweb, "--calling-ae", CALLING_AE, "--all"]
    assert main([*base, "--dimse-destination", destination.address, "--dicomweb-url", destination.dicomweb]) == 2
    assert "give --dicomweb-url or --dimse-destination, not both" in capsys.readouterr().err
    assert main(base) == 2
    assert "give --dicomweb-url URL or --dimse-destination" in capsys.readouterr().err
    assert main([*base, "--dimse-destination", destination.address, "--verify-bytes"]) == 2
    assert "--verify-bytes" in capsys.readouterr().err


def test_a_pacs_to_another_pacs_in_one_run(pacs, destination, migrate_cli):  # noqa: F811
    server, _, made = pacs
    args = ["--dimse-source", server.address, "--dimse-destination", destination.address,
            "--calling-ae", CALLING_AE, "--all", "--study-date", RANGE]
    run = migrate_cli(*args)
    assert run.status == 0, run.errors
    expected = {tuple(path.removesuffix(".dcm").split("/")): sha for path, sha in expected_in_range(made).items()}
    assert {key: sha for key, (_, sha) in held(destination).items()} == expected
    assert run.counter["success"] == len(expected) == 12

    again = migrate_cli(*args)
    assert again.status == 0, again.errors
    assert (again.counter["success"], again.counter["unchanged"]) == (0, len(expected))


def test_de_identified_into_a_pacs_then_rerun_finds_everything_unchanged(source, destination, migrate_cli,
                                                                         monkeypatch):
    """The PACS is asked for the keyed pseudonyms of the source's UIDs, before and after storing."""
    from dicom_transfer.deid.pseudonyms import Pseudonyms

    key = "a-test-key-of-at-least-16-bytes"
    monkeypatch.setenv("DEID_KEY", key)
    server, made = source
    study = uid_for("dimse", "a")
    args = ["--source-dicomweb-url", server.dicomweb, "--dimse-destination", destination.address,
            "--calling-ae", CALLING_AE, "--identifier", study, "--deidentify", "basic", "--deid-key-env", "DEID_KEY"]
    run = migrate_cli(*args)
    assert run.status == 0, run.errors
    assert (run.counter["success"], run.counter["deidentified"]) == (6, 6)
    pseudonym = Pseudonyms(key.encode()).uid
    assert set(held(destination)) == {tuple(map(pseudonym, k)) for k in made if k[0] == study}

    again = migrate_cli(*args)
    assert again.status == 0, again.errors
    assert (again.counter["success"], again.counter["unchanged"]) == (0, 6)
