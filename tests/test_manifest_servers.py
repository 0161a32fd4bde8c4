"""The manifest and reconciliation of import, export and migrate (#17), against real Orthanc servers."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

from servers import Orthanc

from dicom_transfer.pipelines.cli import main
from dicom_transfer.sample import instance_bytes, uid_for, write_sample_set


def manifest_lines(report_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (report_dir / "manifest.jsonl").read_text().splitlines()]


def series_rows(report_dir: Path) -> list[dict]:
    with open(report_dir / "reconciliation.csv", newline="") as source:
        return [row for row in csv.DictReader(source) if row["level"] == "series"]


def uids_in(rows: list[dict], column: str) -> set[str]:
    return {sop for row in rows for sop in row[column].split()}


def test_import_manifest_then_verify_finds_what_was_deleted_and_added(orthanc, import_cli, tmp_path, capsys):
    sample = write_sample_set(str(tmp_path / "in"), studies=1, series_per_study=2, instances_per_series=3,
                              seed="manifest-import")
    run = import_cli("--input", f"{tmp_path}/in/**", "--dicomweb-url", orthanc.dicomweb)
    lines = manifest_lines(run.report_dir)
    assert len(lines) == len(sample.valid) + len(sample.bad)
    stored = {line["SOPInstanceUID"] for line in lines if line["outcome"] == "success"}
    assert stored == {instance.sop_uid for instance in sample.valid}
    assert len([line for line in lines if line["outcome"] == "failure"]) == len(run.errors)
    section = run.summary["reconciliation"]
    assert (section["series"], section["complete"], section["destinationChecked"]) == (2, 2, True)

    gone = sample.valid[4]
    orthanc.delete_instances({gone.sop_uid})
    stray = uid_for("manifest-import", "stray")
    orthanc.upload(instance_bytes(sample.valid[0].study_uid, sample.valid[0].series_uid, stray))
    status = main(["verify", "--manifest", str(run.report_dir / "manifest.jsonl"), "--dicomweb-url",
                   orthanc.dicomweb, "--operation-id", "check"])
    capsys.readouterr()
    rows = series_rows(run.report_dir / "check")
    assert status == 1
    assert uids_in(rows, "missingSOPInstanceUIDs") == {gone.sop_uid}
    assert uids_in(rows, "extraSOPInstanceUIDs") == {stray}


def test_export_manifest_names_each_file_written(orthanc, tmp_path, capsys):
    study = uid_for("manifest-export", 0)
    sops = {}
    for se in range(2):
        for n in range(2):
            sop = uid_for("manifest-export", se, n)
            data = instance_bytes(study, uid_for("manifest-export", "se", se), sop, pixel_bytes=1024)
            orthanc.upload(data)
            sops[sop] = data
    output = tmp_path / "o"
    status = main(["export", "--dicomweb-url", orthanc.dicomweb, "--identifier", study, "--output", str(output),
                   "--operation-id", "exp"])
    capsys.readouterr()
    assert status == 0
    lines = manifest_lines(output / ".dicom-transfer" / "exp")
    assert {line["SOPInstanceUID"] for line in lines} == set(sops)
    for line in lines:
        assert line["outcome"] == "success" and Path(line["destination"]).stat().st_size == line["size"]
    assert all(row["complete"] == "true" and row["present"] == "2"
               for row in series_rows(output / ".dicom-transfer" / "exp"))


def test_migrate_manifest_checksums_are_those_of_the_bytes_moved(orthanc, tmp_path, capsys):
    destination = Orthanc(tmp_path / "destination").start()
    try:
        study = uid_for("manifest-migrate", 0)
        sent = {}
        for n in range(3):
            sop = uid_for("manifest-migrate", 0, n)
            data = instance_bytes(study, uid_for("manifest-migrate", "se"), sop, pixel_bytes=2048 + n)
            orthanc.upload(data)
            sent[sop] = data
        reports = tmp_path / "reports"
        status = main(["migrate", "--source-dicomweb-url", orthanc.dicomweb, "--dicomweb-url", destination.dicomweb,
                       "--identifier", study, "--operation-id", "mig", "--errors", str(reports / "errors.log"),
                       "--summary", str(reports / "summary.json")])
        capsys.readouterr()
        assert status == 0
        lines = manifest_lines(reports)
        held = destination.stored_files()
        assert {line["SOPInstanceUID"] for line in lines} == set(sent)
        for line in lines:
            assert line["checksum"]["sha256"] == hashlib.sha256(held[line["SOPInstanceUID"]]).hexdigest()
        assert json.loads((reports / "summary.json").read_text())["reconciliation"]["complete"] == 1
    finally:
        destination.stop()
