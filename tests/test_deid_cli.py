"""`dicom-transfer copy --deidentify basic` end to end, as a user runs it."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import subprocess
from pathlib import Path

import pydicom
import pytest
from conftest import run_cli_subprocess, tree
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicom_transfer.deid.pseudonyms import Pseudonyms
from dicom_transfer.sample import instance_bytes, uid_for

KEY = "k3y-for-tests-only-5f0c1e2a9b7d4e6f"
STUDY = uid_for("deid-cli", "study")
SERIES = {name: uid_for("deid-cli", name) for name in ("A", "B")}
FRAME_OF_REFERENCE = uid_for("deid-cli", "for")
SOPS = {name: [uid_for("deid-cli", name, n) for n in range(3)] for name in SERIES}
PHI = ["Doe^Jane", "MRN-0042", "ACC-98765", "St Elsewhere", "19610512", "20240315"]
DEID = ["--deidentify", "basic", "--deid-key-env", "DEID_KEY"]


def referencing_instance(name: str, n: int) -> bytes:
    """Series A and B of one study: each instance references the other series' instances."""
    other = "B" if name == "A" else "A"
    ds = pydicom.dcmread(io.BytesIO(instance_bytes(STUDY, SERIES[name], SOPS[name][n], patient_id="MRN-0042",
                                                   instance_number=n + 1, study_date="20240315")))
    ds.PatientName, ds.PatientBirthDate = "Doe^Jane", "19610512"
    ds.AccessionNumber, ds.InstitutionName, ds.BurnedInAnnotation = "ACC-98765", "St Elsewhere", "NO"
    ds.FrameOfReferenceUID = FRAME_OF_REFERENCE
    references = []
    for sop in SOPS[other]:
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = ds.SOPClassUID, sop
        references.append(item)
    ds.ReferencedImageSequence = Sequence(references)
    series_ref = Dataset()
    series_ref.SeriesInstanceUID, series_ref.StudyInstanceUID = SERIES[other], STUDY
    ds.ReferencedSeriesSequence = Sequence([series_ref])
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.fixture
def two_series(tmp_path) -> Path:
    root = tmp_path / "in"
    for name in SERIES:
        for n in range(3):
            path = root / name / f"{n}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(referencing_instance(name, n))
    return root


@pytest.fixture
def key_env(monkeypatch):
    monkeypatch.setenv("DEID_KEY", KEY)


def outputs(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*.dcm") if ".dicom-transfer" not in p.parts}


def all_report_text(out: Path, *more: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in [*out.rglob("*.json"), *out.rglob("*.log"), *more])


def test_two_series_with_two_workers_stay_linked_and_rerun_identically(two_series, tmp_path):
    runs = []
    for n in (1, 2):
        out, mapping = tmp_path / f"out{n}", tmp_path / f"mapping{n}.csv"
        result = run_cli_subprocess(
            "copy", "--input", f"{two_series}/**", "--output", str(out), *DEID, "--deid-mapping", str(mapping),
            "--direct_running_mode", "multi_processing", "--direct_num_workers", "2", "-v",
            env={"DEID_KEY": KEY})
        assert result.returncode == 0, result.stderr
        runs.append((out, mapping, result))
    (out, mapping, result), (out2, mapping2, result2) = runs
    assert tree(out) == tree(out2) and mapping.read_bytes() == mapping2.read_bytes()  # byte-identical re-run
    summary = json.loads(next(out.glob(".dicom-transfer/*/summary.json")).read_text())
    assert summary["counter"]["success"] == 6 and summary["counter"]["deidentified"] == 6
    assert summary["deidentification"]["edition"] == "2024b"

    written = {path: pydicom.dcmread(io.BytesIO(data)) for path, data in outputs(out).items()}
    assert len(written) == 6
    sops = {ds.SOPInstanceUID: ds for ds in written.values()}
    series = {ds.SeriesInstanceUID for ds in written.values()}
    for path, ds in written.items():  # paths from the new UIDs
        assert path == f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        for item in ds.ReferencedImageSequence:  # references resolve to the other series' outputs
            assert item.ReferencedSOPInstanceUID in sops
            assert sops[item.ReferencedSOPInstanceUID].SeriesInstanceUID != ds.SeriesInstanceUID
        assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID in series - {ds.SeriesInstanceUID}
    assert len({ds.FrameOfReferenceUID for ds in written.values()}) == 1
    assert len({ds.PatientID for ds in written.values()}) == 1

    originals = [STUDY, FRAME_OF_REFERENCE, *SERIES.values(), *SOPS["A"], *SOPS["B"]]
    everything = b"".join(outputs(out).values())
    for text in [*PHI, *originals]:
        assert text.encode() not in everything, text

    rows = list(csv.DictReader(mapping.open()))
    assert sorted(r["original"] for r in rows) == sorted({*originals, "MRN-0042"})  # one row per original
    by_original = {r["original"]: r for r in rows}
    assert by_original["MRN-0042"]["pseudonym"] == next(iter(written.values())).PatientID
    assert set(by_original[SOPS["A"][0]]["seen_as"].split(";")) == {"SOPInstanceUID", "ReferencedSOPInstanceUID"}
    assert stat.S_IMODE(mapping.stat().st_mode) == 0o600

    logs = result.stdout + result.stderr + result2.stdout + result2.stderr + all_report_text(out)
    assert KEY not in logs + mapping.read_text() and KEY.encode() not in everything
    for text in PHI[:4]:
        assert text not in logs, text
    assert not any((out / ".dicom-transfer" / "staging").rglob("*.dcm"))  # staged files moved or removed

    for path in list(out.rglob("*.dcm"))[:2]:  # an independent reader accepts the files
        dump = subprocess.run(["dcmdump", "-q", str(path)], capture_output=True, text=True)
        assert dump.returncode == 0 and "Doe^Jane" not in dump.stdout, dump.stderr
        assert "(0012,0062) CS [YES]" in dump.stdout


def test_a_rerun_into_the_same_destination_changes_nothing(copy_cli, two_series, tmp_path, key_env):
    out = tmp_path / "out"
    first = copy_cli("--input", f"{two_series}/**", "--output", str(out), *DEID)
    before = tree(out)
    again = copy_cli("--input", f"{two_series}/**", "--output", str(out), *DEID)
    assert first.status == again.status == 0
    assert again.counter["unchanged"] == 6 and again.counter["success"] == 0 and tree(out) == before


@pytest.mark.parametrize(("arguments", "environment", "message"), [
    (["--deidentify", "basic"], {}, "needs a key"),
    (DEID, {}, "DEID_KEY (--deid-key-env) is not set"),
    (DEID, {"DEID_KEY": "short"}, "at least 16"),
    (["--deidentify", "basic", "--deid-key-file", "/nonexistent/key"], {}, "cannot read the key file"),
    (["--deid-key-env", "DEID_KEY"], {"DEID_KEY": KEY}, "need(s) --deidentify basic"),
    ([*DEID, "--retain-longitudinal-full-dates", "--retain-longitudinal-modified-dates"], {"DEID_KEY": KEY},
     "exclude each other"),
])
def test_without_a_usable_key_nothing_runs(copy_cli, two_series, tmp_path, monkeypatch, capsys, arguments,
                                           environment, message):
    monkeypatch.delenv("DEID_KEY", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    run = copy_cli("--input", f"{two_series}/**", "--output", str(tmp_path / "out"), *arguments)
    assert run.status == 2 and message in run.err
    assert not (tmp_path / "out").exists()
    if environment.get("DEID_KEY") == "short":
        assert "short" not in run.err


def test_key_file_and_burned_in_instances_are_failures_named_by_their_source(copy_cli, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    os.chmod(key_file, 0o600)
    source = tmp_path / "in"
    source.mkdir()
    ds = pydicom.dcmread(io.BytesIO(referencing_instance("A", 0)))
    ds.Modality, ds.BurnedInAnnotation = "US", "YES"
    ds.save_as(source / "burned.dcm")
    (source / "clean.dcm").write_bytes(referencing_instance("A", 1))
    out = tmp_path / "out"
    run = copy_cli("--input", str(source), "--output", str(out), "--deidentify", "basic",
                   "--deid-key-file", str(key_file))
    assert run.status == 1 and run.counter["success"] == 1 and run.counter["failure"] == 1
    error = run.error_for("burned.dcm")
    assert error["Identifier"] == str(source / "burned.dcm") and error["Stage"] == "deidentify"
    assert "BurnedInAnnotation is YES" in error["Error"]
    assert not any(text in json.dumps(run.errors) for text in PHI)
    allowed = copy_cli("--input", str(source), "--output", str(out), "--deidentify", "basic",
                       "--deid-key-file", str(key_file), "--allow-burned-in")
    assert allowed.status == 0 and allowed.counter["success"] == 1 and allowed.counter["unchanged"] == 1


@pytest.fixture
def export_cli(copy_cli, monkeypatch):
    """The copy_cli helper, pointed at the export command."""
    from dicom_transfer.pipelines import cli

    real_main = cli.main
    monkeypatch.setattr("conftest.main", lambda argv: real_main(["export", *argv[1:]]))
    return copy_cli


def test_export_deidentifies_what_it_retrieves(orthanc, export_cli, tmp_path, key_env):
    for name in SERIES:
        for n in range(3):
            orthanc.upload(referencing_instance(name, n))
    out, mapping = tmp_path / "out", tmp_path / "mapping.csv"
    run = export_cli("--dicomweb-url", orthanc.dicomweb, "--output", str(out), "--identifier", STUDY,
                     *DEID, "--deid-mapping", str(mapping))
    assert run.status == 0, run.err
    assert run.counter["success"] == 6 and run.counter["deidentified"] == 6
    written = [pydicom.dcmread(io.BytesIO(data)) for data in outputs(out).values()]
    sops = {ds.SOPInstanceUID for ds in written}
    assert len(sops) == 6 and all(item.ReferencedSOPInstanceUID in sops
                                  for ds in written for item in ds.ReferencedImageSequence)
    everything = b"".join(outputs(out).values())
    for text in [*PHI, STUDY, *SOPS["A"]]:
        assert text.encode() not in everything, text
    # the same key gives the same pseudonyms whichever pipeline made them (copy derives them alike)
    assert written[0].StudyInstanceUID == Pseudonyms(KEY.encode()).uid(STUDY)
    rows = {r["original"]: r["pseudonym"] for r in csv.DictReader(mapping.open())}
    assert rows[STUDY] == written[0].StudyInstanceUID
    assert len(rows) == 1 + 1 + 1 + 2 + 6  # patient, study, frame of reference, series, instances


def test_deidentify_into_a_bucket_stages_in_the_bucket_and_leaves_nothing_behind(stores, bucket, two_series,
                                                                                   copy_cli, tmp_path, key_env):
    import fsspec

    out = f"{bucket('gs://')}/shared"
    reports = ["--errors", str(tmp_path / "errors.log"), "--summary", str(tmp_path / "summary.json")]
    run = copy_cli("--input", f"{two_series}/**", "--output", out, *DEID, *reports)
    assert run.status == 0, run.err
    fs = fsspec.filesystem("gs")
    found = [path for path in fs.find(out) if path.endswith(".dcm")]
    assert len(found) == 6 and not any("/staging/" in path for path in found)  # staged objects moved, removed
    everything = b"".join(fs.cat_file(path) for path in found)
    for text in [*PHI, STUDY, *SOPS["B"]]:
        assert text.encode() not in everything, text
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["counter"]["deidentified"] == 6 and summary["counter"]["success"] == 6
    again = copy_cli("--input", f"{two_series}/**", "--output", out, *DEID, *reports)
    assert again.status == 0
    assert json.loads((tmp_path / "summary.json").read_text())["counter"]["unchanged"] == 6


def test_outputs_are_linked_into_place_unnamed_or_named_with_the_same_bytes(copy_cli, two_series, tmp_path, key_env,
                                                                           monkeypatch):
    from dicom_transfer.io import atomic, destination

    linked = []
    real_link = destination.link_unnamed
    monkeypatch.setattr(destination, "link_unnamed", lambda fd, path, overwrite: linked.append(path) or real_link(
        fd, path, overwrite))
    unnamed = copy_cli("--input", f"{two_series}/**", "--output", str(tmp_path / "unnamed"), *DEID)
    assert unnamed.status == 0 and unnamed.counter["success"] == unnamed.counter["deidentified"] == 6
    assert len(linked) == 6  # each output was an unnamed file, linked into place
    monkeypatch.setattr(atomic._Support, "unnamed", False)  # where the system does not allow them
    named = copy_cli("--input", f"{two_series}/**", "--output", str(tmp_path / "named"), *DEID)
    assert named.status == 0 and named.counter["success"] == 6 and len(linked) == 6
    assert outputs(tmp_path / "unnamed") == outputs(tmp_path / "named")
    for out in ("unnamed", "named"):
        assert not [p for p in (tmp_path / out / ".dicom-transfer" / "staging").rglob("*") if p.is_file()]
        manifest = [json.loads(line) for line in
                    next((tmp_path / out).glob(".dicom-transfer/*/manifest.jsonl")).read_text().splitlines()]
        assert len(manifest) == 6
        assert "sha256" not in json.dumps(manifest)  # no checksum the worker did not compute


def test_an_output_with_other_bytes_is_kept_or_replaced_with_overwrite(copy_cli, two_series, tmp_path, key_env):
    out = tmp_path / "out"
    assert copy_cli("--input", f"{two_series}/**", "--output", str(out), *DEID).status == 0
    before = outputs(out)
    changed = out / sorted(before)[0]
    changed.write_bytes(b"other bytes")
    kept = copy_cli("--input", f"{two_series}/**", "--output", str(out), *DEID)
    assert kept.status == 1 and kept.counter["unchanged"] == 5 and kept.counter["failure"] == 1
    assert "exists with different content" in json.dumps(kept.errors) and changed.read_bytes() == b"other bytes"
    replaced = copy_cli("--input", f"{two_series}/**", "--output", str(out), *DEID, "--overwrite")
    assert replaced.status == 0 and replaced.counter["success"] == 1 and outputs(out) == before
    assert not list(changed.parent.glob(".*.partial"))
