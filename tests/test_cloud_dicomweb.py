"""import from and export to object stores: DICOMweb and buckets together."""

from __future__ import annotations

import hashlib
from pathlib import Path

from test_cloud_copy import remote_tree, upload

from dicom_transfer.sample import write_sample_set


def test_import_from_s3(stores, bucket, orthanc, import_cli, tmp_path):
    sample = write_sample_set(str(tmp_path / "sample"), studies=1, series_per_study=2, instances_per_series=3,
                              seed="s3-import")
    source = f"{bucket('s3://')}/incoming"
    upload(tmp_path / "sample", source)
    run = import_cli("--input", f"{source}/**.dcm", "--dicomweb-url", orthanc.dicomweb)
    assert run.counter["success"] == 6 and run.counter["failure"] == len(sample.bad)
    held = orthanc.instances_in(sample.valid[0].study_uid)
    assert {sop: hashlib.sha256(data).hexdigest() for sop, data in held.items()} == {
        i.sop_uid: hashlib.sha256(Path(i.path).read_bytes()).hexdigest() for i in sample.valid}


def test_export_to_gcs_with_azure_layout(stores, bucket, orthanc, import_cli, copy_cli, tmp_path, monkeypatch):
    sample = write_sample_set(str(tmp_path / "sample"), studies=1, series_per_study=1, instances_per_series=4,
                              bad_files=False, seed="gcs-export")
    assert import_cli("--input", str(tmp_path / "sample"), "--dicomweb-url", orthanc.dicomweb).status == 0
    out = bucket("gs://")
    from dicom_transfer.pipelines import cli

    real_main = cli.main
    monkeypatch.setattr("conftest.main", lambda argv: real_main(["export", *argv[1:]]))
    run = copy_cli("--dicomweb-url", orthanc.dicomweb, "--identifier", sample.valid[0].study_uid,
                   "--output", out, "--layout", "azure", operation_id="op-gcs")
    assert run.status == 0, run.out
    exported = remote_tree(out)
    expected = {f"op-gcs/results/{i.relative_uid_path}": hashlib.sha256(Path(i.path).read_bytes()).hexdigest()
                for i in sample.valid}
    assert {k: v for k, v in exported.items() if k.startswith("op-gcs/results/")} == expected
    assert "op-gcs/errors.log" in exported and "op-gcs/summary.json" in exported
