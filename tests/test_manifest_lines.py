"""Manifest lines as text (#17): formatted from a template, read back in batches; both must say
exactly what ``json`` would, whatever characters a path or UID holds."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dicom_transfer import manifest
from dicom_transfer.elements import Outcome
from dicom_transfer.io.manifests import read_manifest_lines
from dicom_transfer.sample import instance_bytes

ODD = ['plain', 'quote"d', 'back\\slash', 'new\nline\ttab\rreturn', 'nul\x00 and \x1f and \x7f',
       'é ü 中文 😀', '\u2028\u2029', 'lone \ud800 surrogate', '</script>', 'a b', '']


@pytest.mark.parametrize("text", ODD)
@pytest.mark.parametrize("kind", manifest.INSTANCE_OUTCOMES)
def test_a_line_from_the_template_is_the_text_json_writes(text, kind):
    for checksum in [(), (("sha256", "ab" * 32),), (("md5", text), ("crc32c", "x"))]:
        outcome = Outcome(kind, 12, f"/in/{text}.dcm", f"/out/{text}.dcm", f"1.2{text}", text, f"{text}3",
                          checksum, text)
        line = manifest.outcome_line(outcome, "2026-11-28T16:00:00.123Z")
        text_line = manifest.outcome_json(outcome, "2026-11-28T16:00:00.123Z")
        assert text_line == manifest.to_json_line(line)
        assert json.loads(text_line) == line


def test_a_line_names_no_credentials_and_no_line_is_written_for_a_step_between():
    outcome = Outcome("success", 1, "s3://key:secret@bucket/a.dcm", "gs://b/x?sig=abc", "1", "2", "3")
    text = manifest.outcome_json(outcome, "t")
    assert "secret" not in text and "abc" not in text
    assert json.loads(text) == manifest.outcome_line(outcome, "t")
    assert manifest.outcome_json(outcome._replace(kind="deidentified"), "t") is None


def test_manifest_lines_read_in_batches_are_those_json_reads_one_by_one(tmp_path, monkeypatch):
    from dicom_transfer.io import manifests

    monkeypatch.setattr(manifests, "BATCH", 3)
    writable = [text for text in ODD if "\ud800" not in text]  # a lone surrogate is not UTF-8
    lines = [manifest.outcome_json(Outcome("success", n, f"/in/{text}", f"/out/{text}", "1", "2", str(n)), "t")
             for n, text in enumerate(writable)]
    path = tmp_path / "manifest.jsonl"
    path.write_text("\n".join(lines[:4]) + "\n\n" + "\n".join(lines[4:]) + "\n", encoding="utf-8")
    assert list(read_manifest_lines(str(path))) == [json.loads(line) for line in lines]


@pytest.mark.parametrize("broken", [
    ['{"a": 1}', '{"b": 2} {"c": 3}'],  # two values on one line
    ['{"a": 1},', '{"b": 2}'],  # a line with a trailing comma
    ['{"a": 1}', '{"b": '],  # a truncated last line
])
def test_a_broken_manifest_line_fails_as_it_does_alone(tmp_path, broken):
    path = tmp_path / "manifest.jsonl"
    path.write_text("\n".join(broken) + "\n", encoding="utf-8")
    with pytest.raises(json.JSONDecodeError):
        list(read_manifest_lines(str(path)))


def test_a_copy_of_oddly_named_files_names_them_as_they_are(copy_cli, tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    names = ['quote".dcm', 'back\\slash.dcm', 'tab\there.dcm', 'é 中文 😀.dcm', 'a\x01b.dcm', 'new\nline.dcm',
             'plain.dcm']
    for n, name in enumerate(names):
        (source / name).write_bytes(instance_bytes("1.2.3", "1.2.3.4", f"1.2.3.4.{n + 1}"))
    run = copy_cli("--input", str(source), "--output", str(tmp_path / "out"))
    assert run.status == 0, run.err
    lines = [json.loads(text) for text in (run.report_dir / "manifest.jsonl").read_text("utf-8").splitlines()]
    assert sorted(Path(line["source"]).name for line in lines) == sorted(names)
    assert {line["outcome"] for line in lines} == {"success"}
    again = copy_cli("--input", str(source), "--output", str(tmp_path / "out"))  # read back by the quick check
    assert again.status == 0, again.err
    lines = [json.loads(text) for text in (again.report_dir / "manifest.jsonl").read_text("utf-8").splitlines()]
    assert sorted(Path(line["source"]).name for line in lines) == sorted(names)
    assert {line["outcome"] for line in lines} == {"unchanged"}


def test_a_file_name_that_is_not_utf8_is_one_error_record_and_the_others_are_copied(copy_cli, tmp_path):
    """A name the OS gives as bytes that are not UTF-8 (Beam, the manifest and errors.log carry
    UTF-8 text) used to fail the whole copy; it is now one failure, its bytes shown escaped."""
    source = tmp_path / "in"
    source.mkdir()
    for n in range(3):
        (source / f"good{n}.dcm").write_bytes(instance_bytes("1.2.3", "1.2.3.4", f"1.2.3.4.{n + 1}"))
    with open(os.path.join(os.fsencode(source), b"bad\xff.dcm"), "wb") as out:
        out.write(instance_bytes("1.2.3", "1.2.3.4", "1.2.3.4.9"))
    for attempt in range(2):  # and again, where the quick check reads the earlier manifest
        run = copy_cli("--input", str(source), "--output", str(tmp_path / "out"))
        assert run.status == 1, run.err
        records = run.errors
        assert [(r["Identifier"], r["Stage"]) for r in records] == [(f"{source}/bad\\xff.dcm", "expand")]
        assert "not valid UTF-8" in records[0]["Error"]
        lines = [json.loads(text) for text in (run.report_dir / "manifest.jsonl").read_text("utf-8").splitlines()]
        instances = sorted(Path(line["source"]).name for line in lines if line["outcome"] != "failure")
        assert instances == ["good0.dcm", "good1.dcm", "good2.dcm"]
        assert {line["outcome"] for line in lines if line["outcome"] != "failure"} == \
            ({"success"} if attempt == 0 else {"unchanged"})
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 3
