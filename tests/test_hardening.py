"""Hostile input, crashes, TLS and secrets: nothing lost, nothing leaked."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time

import pytest
from conftest import CLI, REPO, run_cli_subprocess, sha256
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import FaultProxy, self_signed_certificate

from dicom_transfer.part10 import InvalidInstance, validate_part10
from dicom_transfer.resources import parse_filter_line, parse_identifier
from dicom_transfer.sample import instance_bytes, uid_for, write_sample_set
from dicom_transfer.uids import uid_problem

GOOD = instance_bytes(uid_for("h", 1), uid_for("h", 2), uid_for("h", 3), pixel_bytes=1024)


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(position=st.integers(0, len(GOOD) - 1), value=st.integers(0, 255), cut=st.integers(0, len(GOOD)))
def test_corrupted_bytes_are_rejected_cleanly_or_accepted_never_crash(position, value, cut):
    data = bytearray(GOOD[:cut])
    if position < len(data):
        data[position] = value
    started = time.monotonic()
    try:
        validate_part10(io.BytesIO(bytes(data)), len(data))
    except InvalidInstance as exc:
        assert str(exc)
    assert time.monotonic() - started < 1.0


@given(st.text(max_size=80))
def test_uid_validator_never_accepts_what_could_escape_a_path(text):
    if uid_problem(text) is None:
        assert set(text) <= set("0123456789.") and ".." not in text and not text.startswith(".")
        assert 0 < len(text) <= 64


@given(st.text(max_size=120))
def test_identifier_and_filter_parsers_reject_with_a_message_or_return_valid_uids(text):
    for parse in (parse_identifier, parse_filter_line):
        try:
            path = parse(text)
        except ValueError as exc:
            assert str(exc)
            continue
        for uid in (path.study, path.series, path.instance):
            assert uid is None or uid_problem(uid) is None


def test_self_signed_dicomweb_is_refused_by_default_and_accepted_with_ca_bundle(orthanc, tmp_path):
    certificate, key = self_signed_certificate(tmp_path)
    proxy = FaultProxy(orthanc.url, tls=(certificate, key)).start()
    path = tmp_path / "one.dcm"
    uids = (uid_for("tls", 1), uid_for("tls", 2), uid_for("tls", 3))
    path.write_bytes(instance_bytes(*uids))
    try:
        refused = run_cli_subprocess("import", "--input", str(path), "--dicomweb-url", proxy.dicomweb(),
                                     "--errors", str(tmp_path / "e.log"), "--summary", str(tmp_path / "s.json"))
        accepted = run_cli_subprocess("import", "--input", str(path), "--dicomweb-url", proxy.dicomweb(),
                                      "--ca-bundle", certificate, "--errors", str(tmp_path / "e.log"),
                                      "--summary", str(tmp_path / "s.json"))
    finally:
        proxy.stop()
    assert refused.returncode == 2
    assert "TLS verification" in refused.stderr and "--ca-bundle" in refused.stderr
    assert accepted.returncode == 0, accepted.stderr
    assert uids[2] in orthanc.instances_in(uids[0])


RUNNER_MODES = {
    "in-process": [],
    # Beam re-parses the options in each worker process and logs what it cannot parse: the product's
    # options (URLs with credentials) must never be among them. -vv: Beam's and the libraries' lines too.
    "worker-processes": ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2", "-vv"],
}


@pytest.mark.parametrize("mode", RUNNER_MODES)
def test_password_in_url_and_bearer_token_never_appear(orthanc, tmp_path, mode):
    proxy = FaultProxy(orthanc.url, bearer="tok-3c9f0e").start()
    path = tmp_path / "one.dcm"
    uids = (uid_for("sec", mode, 1), uid_for("sec", mode, 2), uid_for("sec", mode, 3))  # a run of its own
    path.write_bytes(instance_bytes(*uids))
    (tmp_path / "bad.dcm").write_bytes(b"not dicom")
    url = proxy.dicomweb().replace("http://", "http://alice:pw-81b2a7@")
    try:
        result = run_cli_subprocess("import", "--input", f"{tmp_path}/*.dcm", "--dicomweb-url", url,
                                    "--errors", str(tmp_path / "e.log"), "--summary", str(tmp_path / "s.json"),
                                    *RUNNER_MODES[mode], env={"DICOMWEB_TOKEN": "tok-3c9f0e"})
    finally:
        proxy.stop()
    assert result.returncode == 1, result.stderr
    # every report the run wrote: errors.log, the summary, the manifest, the reconciliation, report.html
    reports = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".dcm"]
    assert {"e.log", "s.json", "manifest.jsonl", "reconciliation.csv", "report.html"} <= {p.name for p in reports}
    texts = result.stdout + result.stderr + "".join(p.read_text(errors="replace") for p in reports)
    assert "pw-81b2a7" not in texts and "tok-3c9f0e" not in texts
    assert json.loads((tmp_path / "s.json").read_text())["counter"]["success"] == 1


def _outputs(folder) -> list:
    return [p for p in folder.rglob("*.dcm") if ".dicom-transfer" not in p.parts]


def _start_copy(source, out) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "copy", "--input", str(source), "--output", str(out)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for_outputs(process: subprocess.Popen, out, count: int) -> list:
    """The outputs once there are ``count`` of them, the copy still running (each file is
    written as soon as it is validated, so they appear early and steadily)."""
    deadline = time.monotonic() + 240
    found = []
    while time.monotonic() < deadline and process.poll() is None:
        found = _outputs(out)
        if len(found) >= count:
            break
        time.sleep(0.05)
    assert process.poll() is None, f"the copy finished before {count} outputs were seen ({len(found)})"
    return found


def test_sigkill_in_the_middle_of_a_copy_then_rerun_completes_byte_identical(tmp_path):
    sample = write_sample_set(str(tmp_path / "in"), studies=4, series_per_study=5, instances_per_series=100,
                              pixel_bytes=16 * 1024, bad_files=False)
    out = tmp_path / "out"
    process = _start_copy(tmp_path / "in", out)
    _wait_for_outputs(process, out, 50)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = set(_outputs(out))
    assert 50 <= len(done_before) < len(sample.valid)
    expected = {str(out / i.relative_uid_path): sha256(i.path) for i in sample.valid}
    for path in done_before:  # nothing partial under a final name
        assert sha256(path) == expected[str(path)]
    result = run_cli_subprocess("copy", "--input", str(tmp_path / "in"), "--output", str(out),
                                "--operation-id", "resume")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / ".dicom-transfer/resume/summary.json").read_text())
    assert summary["counter"]["unchanged"] >= len(done_before)
    assert summary["counter"]["success"] + summary["counter"]["unchanged"] == len(sample.valid)
    final = {str(p): sha256(p) for p in out.rglob("*.dcm")}
    assert final == expected


def _atime_is_kept(folder) -> bool:
    probe = folder / "atime-probe"
    probe.write_bytes(b"x")
    os.utime(probe, ns=(1_000_000_000, 2_000_000_000))  # read before it was last changed
    probe.read_bytes()
    kept = probe.stat().st_atime_ns > 2_000_000_000
    probe.unlink()
    return kept


def test_outputs_appear_while_inputs_are_still_unread_and_ctrl_c_keeps_them(tmp_path):
    """A copy writes each file as soon as it has validated it: when the first output appears, most
    inputs have not even been read (their access time says so), and Ctrl-C keeps every output
    written, complete; a re-run finishes the job."""
    if not _atime_is_kept(tmp_path):
        pytest.skip("this file system does not record access times")
    sample = write_sample_set(str(tmp_path / "in"), studies=3, series_per_study=5, instances_per_series=200,
                              pixel_bytes=8 * 1024, bad_files=False, seed="ctrl-c")
    for instance in sample.valid:  # unread: accessed before last changed
        os.utime(instance.path, ns=(1_000_000_000, 2_000_000_000))
    out = tmp_path / "out"
    process = _start_copy(tmp_path / "in", out)
    _wait_for_outputs(process, out, 1)
    read = sum(os.stat(i.path).st_atime_ns > 2_000_000_000 for i in sample.valid)
    assert read < len(sample.valid) / 2, f"{read} of {len(sample.valid)} inputs read before the first output"

    written = _wait_for_outputs(process, out, len(sample.valid) // 10)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr.decode()[-2000:]
    kept = _outputs(out)
    assert len(written) <= len(kept) < len(sample.valid)
    expected = {str(out / i.relative_uid_path): sha256(i.path) for i in sample.valid}
    assert all(sha256(path) == expected[str(path)] for path in kept)
    result = run_cli_subprocess("copy", "--input", str(tmp_path / "in"), "--output", str(out),
                                "--operation-id", "again")
    assert result.returncode == 0, result.stderr
    counter = json.loads((out / ".dicom-transfer/again/summary.json").read_text())["counter"]
    assert counter["unchanged"] >= len(kept) and counter["success"] + counter["unchanged"] == len(sample.valid)


def test_sigkill_in_the_middle_of_an_import_then_rerun_stores_everything_once(orthanc, tmp_path):
    sample = write_sample_set(str(tmp_path / "in"), studies=1, series_per_study=4, instances_per_series=60,
                              pixel_bytes=32 * 1024, bad_files=False, seed="sigkill-import")
    study = sample.valid[0].study_uid
    process = subprocess.Popen([*CLI, "import", "--input", str(tmp_path / "in"), "--dicomweb-url", orthanc.dicomweb,
                                "--max-instances-per-request", "4", "--concurrency", "1",
                                "--errors", str(tmp_path / "e.log"), "--summary", str(tmp_path / "s.json")],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import requests

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        found = requests.get(f"{orthanc.dicomweb}/studies/{study}/instances",
                             headers={"Accept": "application/dicom+json"}, timeout=10)
        if found.status_code == 200 and found.content and len(found.json()) >= 20:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the import finished before it could be interrupted"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    result = run_cli_subprocess("import", "--input", str(tmp_path / "in"), "--dicomweb-url", orthanc.dicomweb,
                                "--errors", str(tmp_path / "e2.log"), "--summary", str(tmp_path / "s2.json"))
    assert result.returncode == 0, result.stderr
    counter = json.loads((tmp_path / "s2.json").read_text())["counter"]
    assert counter["unchanged"] >= 20 and counter["success"] + counter["unchanged"] == len(sample.valid)
    held = orthanc.instances_in(study)
    assert {sop: sha256_bytes(data) for sop, data in held.items()} == {
        i.sop_uid: sha256(i.path) for i in sample.valid}


def sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_deflate_bomb_is_refused(monkeypatch):
    import zlib

    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import write_file_meta_info

    from dicom_transfer import part10

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    buffer = io.BytesIO()
    buffer.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=False)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = b"".join(compressor.compress(b"\0" * (1 << 20)) for _ in range(80)) + compressor.flush()
    data = buffer.getvalue() + bomb  # 80 MB of zeros in ~80 KB
    monkeypatch.setattr(part10, "MAX_INFLATED_BYTES", 16 << 20)  # a small bound, to keep the test quick
    with pytest.raises(InvalidInstance, match="inflates beyond"):
        validate_part10(io.BytesIO(data), len(data))


@pytest.mark.parametrize("mode", RUNNER_MODES)
def test_export_never_writes_a_bearer_token_or_url_password(orthanc, tmp_path, mode):
    uids = (uid_for("exs", 1), uid_for("exs", 2), uid_for("exs", 3))
    orthanc.upload(instance_bytes(*uids))
    proxy = FaultProxy(orthanc.url, bearer="tok-export-77d1").start()
    url = proxy.dicomweb().replace("http://", "http://bob:pw-export-19ce@")
    out = tmp_path / "out"
    try:
        result = run_cli_subprocess("export", "--dicomweb-url", url, "--identifier", uids[0],
                                    "--identifier", "1.2.3.4.5", "--output", str(out), "--operation-id", "x",
                                    *RUNNER_MODES[mode], env={"DICOMWEB_TOKEN": "tok-export-77d1"})
    finally:
        proxy.stop()
    assert result.returncode == 1, result.stderr  # 1.2.3.4.5 is not on the server
    assert (out / uids[0] / uids[1] / f"{uids[2]}.dcm").exists()
    reports = out / ".dicom-transfer" / "x"
    texts = (result.stdout + result.stderr + (reports / "errors.log").read_text()
             + (reports / "summary.json").read_text())
    assert "tok-export-77d1" not in texts and "pw-export-19ce" not in texts
