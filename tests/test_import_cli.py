"""`dicom-transfer import` against a real Orthanc with its DICOMweb plugin."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from conftest import run_cli_in_process, run_cli_subprocess
from servers import FaultProxy, random_faults

from dicom_transfer.sample import instance_bytes, uid_for, write_bad_files, write_sample_set


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored_exactly(orthanc, sample) -> None:
    """The server holds exactly the sample's valid instances, byte for byte."""
    studies = {i.study_uid for i in sample.valid}
    held = {}
    for study in studies:
        held.update({sop: digest(data) for sop, data in orthanc.instances_in(study).items()})
    with_bytes = {i.sop_uid: digest(Path(i.path).read_bytes()) for i in sample.valid}
    assert held == with_bytes


@pytest.fixture
def sample(tmp_path, request):
    src = tmp_path / "in"
    made = write_sample_set(str(src), studies=3, series_per_study=2, instances_per_series=4,
                            seed=request.node.name)
    for n in range(2):  # a few MB-sized instances
        study, series = made.valid[0].study_uid, made.valid[0].series_uid
        sop = uid_for(request.node.name, "big", n)
        data = instance_bytes(study, series, sop, pixel_bytes=3 << 20, instance_number=50 + n)
        path = src / f"big{n}.dcm"
        path.write_bytes(data)
        made.valid.append(type(made.valid[0])(str(path), study, series, sop, len(data)))
    return made


def test_import_stores_exactly_the_valid_instances_and_reruns_unchanged(orthanc, import_cli, sample, tmp_path):
    src = tmp_path / "in"
    # an identical duplicate of one instance under another name
    (src / "dup.dcm").write_bytes(Path(sample.valid[1].path).read_bytes())
    run = import_cli("--input", f"{src}/**", "--dicomweb-url", orthanc.dicomweb)
    assert run.status == 1
    assert run.counter["success"] == len(sample.valid) == 26
    assert run.counter["unchanged"] == 1  # the duplicate file
    assert run.counter["failure"] == len(sample.bad) == len(run.errors)
    assert run.summary["type"] == "import"
    for path, _ in sample.bad.items():
        assert run.error_for(path.rsplit("/", 1)[1])["Stage"] == "validate"
    stored_exactly(orthanc, sample)

    again = import_cli("--input", f"{src}/**", "--dicomweb-url", orthanc.dicomweb)
    assert (again.counter["success"], again.counter["unchanged"]) == (0, 27)
    stored_exactly(orthanc, sample)


def test_rerun_without_existence_check_is_still_harmless(orthanc, import_cli, sample, tmp_path):
    src = tmp_path / "in"
    for path in sample.bad:
        os.remove(path)
    first = import_cli("--input", str(src), "--dicomweb-url", orthanc.dicomweb, "--no-check-existing",
                       "--max-instances-per-request", "5")
    second = import_cli("--input", str(src), "--dicomweb-url", orthanc.dicomweb, "--no-check-existing")
    assert first.status == second.status == 0
    assert first.counter["success"] == second.counter["success"] == 26
    stored_exactly(orthanc, sample)


def test_conflicting_duplicate_sop_uids_store_one_and_report_the_other(orthanc, import_cli, tmp_path):
    uids = (uid_for("conflict", 1), uid_for("conflict", 2), uid_for("conflict", 3))
    first = instance_bytes(*uids, patient_id="A")
    second = instance_bytes(*uids, patient_id="B")
    (tmp_path / "a.dcm").write_bytes(first)
    (tmp_path / "b.dcm").write_bytes(second)
    run = import_cli("--input", f"{tmp_path}/*.dcm", "--dicomweb-url", orthanc.dicomweb)
    assert run.status == 1
    assert (run.counter["success"], run.counter["failure"]) == (1, 1)
    assert "conflicting duplicate" in run.error_for("b.dcm")["Error"]
    assert digest(orthanc.instances_in(uids[0])[uids[2]]) == digest(first)


def test_in_process_the_first_duplicate_listed_is_kept(orthanc, import_cli, tmp_path):
    """The in-process run sends as it reads: of two files with one SOP Instance UID, the one of
    the pattern given first is kept, even when its URL sorts after the other's."""
    uids = (uid_for("listed-first", 1), uid_for("listed-first", 2), uid_for("listed-first", 3))
    (tmp_path / "a.dcm").write_bytes(instance_bytes(*uids, patient_id="A"))
    (tmp_path / "b.dcm").write_bytes(kept := instance_bytes(*uids, patient_id="B"))
    run = import_cli("--input", str(tmp_path / "b.dcm"), "--input", str(tmp_path / "a.dcm"),
                     "--dicomweb-url", orthanc.dicomweb)
    assert (run.status, run.counter["success"], run.counter["failure"]) == (1, 1, 1)
    error = run.error_for("a.dcm")["Error"]
    assert "conflicting duplicate" in error and f"{tmp_path / 'b.dcm'} was kept" in error
    assert digest(orthanc.instances_in(uids[0])[uids[2]]) == digest(kept)


def test_server_down_is_a_clear_error_and_exit_2(tmp_path, capsys):
    from servers import free_port

    write_bad_files(str(tmp_path))
    result = run_cli_in_process(capsys, "import", "--input", str(tmp_path),
                                "--dicomweb-url", f"http://127.0.0.1:{free_port()}/dicom-web",
                                "--max-attempts", "2")
    assert result.returncode == 2
    assert "cannot use http://127.0.0.1" in result.stderr and "cannot reach" in result.stderr


def test_transient_server_errors_are_retried_and_everything_is_stored_once(orthanc, import_cli, sample, tmp_path):
    proxy = FaultProxy(orthanc.url, plan=random_faults(0.3, seed=3, truncate=True)).start()
    try:
        run = import_cli("--input", f"{tmp_path}/in/**", "--dicomweb-url", proxy.dicomweb(),
                         "--max-instances-per-request", "4", "--max-attempts", "8")
    finally:
        proxy.stop()
    assert proxy.faults >= 3, "the proxy should have injected faults"
    assert run.counter["success"] == len(sample.valid)
    assert run.counter["failure"] == len(sample.bad)
    assert all(e["Stage"] == "validate" for e in run.errors)
    stored_exactly(orthanc, sample)


def test_request_rejected_as_a_whole_is_split_to_find_the_culprit(orthanc, import_cli, sample, tmp_path):
    limit = 2 << 20  # the proxy refuses bodies over 2 MiB, as a server's size limit would

    def too_large(number, method, path, body):
        if method == "POST" and body is not None and len(body) > limit:
            return ("status", 413, {})
        return None

    proxy = FaultProxy(orthanc.url, plan=too_large).start()
    try:
        run = import_cli("--input", f"{tmp_path}/in/**", "--dicomweb-url", proxy.dicomweb(),
                         "--max-request-bytes", str(64 << 20), "--no-check-existing")
    finally:
        proxy.stop()
    big = {i.sop_uid for i in sample.valid if i.size > limit}
    assert len(big) == 2
    assert run.counter["success"] == len(sample.valid) - 2
    too_big = [e for e in run.errors if e["Stage"] == "store"]
    assert sorted(e["Identifier"].rsplit("/", 1)[1] for e in too_big) == ["big0.dcm", "big1.dcm"]
    assert all("413" in e["Error"] for e in too_big)


def test_bearer_token_from_environment(orthanc, import_cli, tmp_path, monkeypatch):
    path = tmp_path / "one.dcm"
    uids = (uid_for("bearer", 1), uid_for("bearer", 2), uid_for("bearer", 3))
    path.write_bytes(instance_bytes(*uids))
    proxy = FaultProxy(orthanc.url, bearer="s3cret-token").start()
    try:
        monkeypatch.setenv("DICOMWEB_TOKEN", "wrong")
        refused = import_cli("--input", str(path), "--dicomweb-url", proxy.dicomweb())
        monkeypatch.setenv("DICOMWEB_TOKEN", "s3cret-token")
        accepted = import_cli("--input", str(path), "--dicomweb-url", proxy.dicomweb())
    finally:
        proxy.stop()
    assert refused.status == 2
    assert accepted.status == 0 and accepted.counter["success"] == 1
    assert uids[2] in orthanc.instances_in(uids[0])
    for report in ("errors.log", "summary.json"):
        assert "s3cret-token" not in (accepted.report_dir / report).read_text()


def test_token_command_is_used_and_never_printed(orthanc, tmp_path):
    path = tmp_path / "one.dcm"
    uids = (uid_for("cmd", 1), uid_for("cmd", 2), uid_for("cmd", 3))
    path.write_bytes(instance_bytes(*uids))
    proxy = FaultProxy(orthanc.url, bearer="from-a-command").start()
    try:
        result = run_cli_subprocess("import", "--input", str(path), "--dicomweb-url", proxy.dicomweb(),
                                    "--token-command", "echo from-a-command",
                                    "--summary", str(tmp_path / "s.json"), "--errors", str(tmp_path / "e.log"))
    finally:
        proxy.stop()
    assert result.returncode == 0, result.stderr
    assert "from-a-command" not in result.stdout + result.stderr + (tmp_path / "s.json").read_text()


def test_http_basic_authentication(tmp_path, import_cli, monkeypatch):
    from servers import Orthanc

    server = Orthanc(tmp_path / "secured", users={"alice": "wonderland"}).start()
    try:
        path = tmp_path / "one.dcm"
        uids = (uid_for("basic", 1), uid_for("basic", 2), uid_for("basic", 3))
        path.write_bytes(instance_bytes(*uids))
        anonymous = import_cli("--input", str(path), "--dicomweb-url", server.dicomweb, "--auth", "none")
        monkeypatch.setenv("DICOMWEB_PASSWORD", "wonderland")
        run = import_cli("--input", str(path), "--dicomweb-url", server.dicomweb, "--username", "alice")
        assert anonymous.status == 2
        assert run.status == 0 and run.counter["success"] == 1
        assert uids[2] in server.instances_in(uids[0])
    finally:
        server.stop()


def test_import_when_the_first_answer_to_every_request_is_cut_off(orthanc, import_cli, tmp_path):
    """The pre-run check, each existence QIDO-RS and the first STOW-RS answer are cut off half way."""
    from servers import first_answers_cut_off

    made = write_sample_set(str(tmp_path / "cut"), studies=1, series_per_study=2, instances_per_series=5,
                            seed="cut-off", bad_files=False)
    proxy = FaultProxy(orthanc.url, plan=first_answers_cut_off()).start()
    try:
        run = import_cli("--input", f"{tmp_path}/cut/**", "--dicomweb-url", proxy.dicomweb(),
                         "--max-instances-per-request", "4")
    finally:
        proxy.stop()
    assert run.status == 0, run.out
    assert run.counter["success"] + run.counter["unchanged"] == len(made.valid)
    assert proxy.faults >= 3
    stored_exactly(orthanc, made)
