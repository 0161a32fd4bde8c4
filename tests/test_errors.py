"""Error records: what a record says, and that a bug is not hidden as one."""

from __future__ import annotations

import json
import logging

import pytest

from dicom_transfer.errors import ErrorRecord, error_text, redact, to_errors_log_line


def test_a_bug_is_a_record_with_its_traceback_logged_once(caplog):
    logger = logging.getLogger("dicom_transfer")
    logger.addHandler(caplog.handler)  # the CLI's logging set-up (an earlier test) stops propagation
    try:
        for _ in range(3):  # the same bug at the same place, for three elements
            try:
                None.url  # noqa: B018 - the bug
            except AttributeError as exc:
                assert error_text(exc) == "internal error: AttributeError: 'NoneType' object has no attribute 'url'"
    finally:
        logger.removeHandler(caplog.handler)
    bugs = list({id(r): r for r in caplog.records if "internal error" in r.getMessage()}.values())
    assert len(bugs) == 1 and bugs[0].exc_info is not None


@pytest.mark.parametrize(("exc", "text"), [
    (OSError(2, "No such file or directory"), "No such file or directory"),
    (ValueError("bad value\nsecond line"), "ValueError: bad value"),
    (RuntimeError("GET https://u:pw@host/x?sig=abc failed"), "RuntimeError: GET https://u:pw@host/x?sig=abc failed"),
])
def test_error_text_is_one_line(exc, text):
    assert error_text(exc) == text


@pytest.mark.parametrize(("raw", "clean"), [
    ("https://alice:pw@host/dicom-web", "https://***@host/dicom-web"),
    ("az://c/x?sv=1&sig=SECRET&se=2", "az://c/x?sv=***&sig=***&se=***"),
    ("AccountName=a;AccountKey=S3CR3T;BlobEndpoint=http://h", "AccountName=a;AccountKey=***;BlobEndpoint=http://h"),
    ("GET /tokeninfo?access_token=ya29.TOKEN", "GET /tokeninfo?access_token=***"),
    ("no secret here", "no secret here"),
])
def test_redact_removes_every_secret_form(raw, clean):
    assert redact(raw) == clean


def test_stages_are_one_vocabulary_written_as_plain_words():
    from dicom_transfer.vocabulary import Kind, Stage

    record = ErrorRecord.create("gs://b/x.dcm", "truncated", Stage.VALIDATE)
    assert json.loads(to_errors_log_line(record))["Stage"] == "validate"
    assert ErrorRecord.create("x", "y", "write").stage is Stage.WRITE
    with pytest.raises(ValueError):
        ErrorRecord.create("x", "y", "writing")  # a misspelt stage is a bug, found at once
    assert f"{Kind.SUCCESS}" == str(Kind.SUCCESS) == "success" == Kind.SUCCESS
    assert json.dumps({Kind.FAILURE: 1}) == '{"failure": 1}'


def test_a_run_hit_by_a_bug_is_failed_not_completed_with_errors(copy_cli, tmp_path, monkeypatch):
    """A bug in a stage (here: validation breaks for one file) leaves a record per element, as bad
    input would, but the run's status is "failed" with the count, and the exit status 1."""
    from dicom_transfer.io import instances as validate
    from dicom_transfer.sample import write_sample_set

    sample = write_sample_set(str(tmp_path / "in"), studies=1, series_per_study=1, instances_per_series=4)
    broken = sample.valid[0]
    real = validate.validate_part10

    def validate_with_a_bug(stream, size, keywords, head=None):
        header = real(stream, size, keywords, head)
        if header.sop_uid == broken.sop_uid:
            return header.no_such_attribute  # the bug: an AttributeError inside the stage
        return header

    monkeypatch.setattr(validate, "validate_part10", validate_with_a_bug)
    run = copy_cli("--input", f"{tmp_path}/in/**", "--output", str(tmp_path / "out"))
    assert run.status == 1
    assert run.summary["status"] == "failed"
    assert run.summary["internalErrors"] == 1
    assert run.counter["success"] == 3 and run.counter["failure"] == 1 + len(sample.bad)
    record = run.error_for(broken.path.rsplit("/", 1)[-1])
    assert "internal error: AttributeError" in record["Error"]
