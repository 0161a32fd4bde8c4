"""`dicom-transfer copy` end to end on the DirectRunner, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli_in_process, run_cli_subprocess, sha256, tree, write_instance

from dicom_transfer.sample import write_sample_set


@pytest.fixture
def examples(tmp_path):
    """Google's wildcard examples: D/Example.dcm, Example1, Example01, Example22, plus a subfolder."""
    d = tmp_path / "D"
    made = {}
    for name in ["Example.dcm", "Example1.dcm", "Example01.dcm", "Example22.dcm",
                 "sub/Example2.dcm", "sub/deeper/Example3.dcm", "Example9.txt"]:
        path, data, uids = write_instance(d / name, name)
        made[name] = (data, uids)
    return d, made


def expected_path(out: Path, uids: tuple[str, str, str]) -> Path:
    return out / uids[0] / uids[1] / f"{uids[2]}.dcm"


def copied(out: Path, made: dict, names: list[str]) -> None:
    """Exactly these instances arrived, byte for byte, at their UID paths."""
    expected = {str(expected_path(out, made[n][1]).relative_to(out)): made[n][0] for n in names}
    actual = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*.dcm")
              if ".dicom-transfer" not in p.parts}
    assert actual == expected


def test_star_matches_example_and_example22_in_that_folder_only(copy_cli, examples, tmp_path):
    d, made = examples
    out = tmp_path / "out"
    run = copy_cli("--input", f"{d}/Example*.dcm", "--output", str(out))
    assert run.status == 0
    copied(out, made, ["Example.dcm", "Example1.dcm", "Example01.dcm", "Example22.dcm"])
    assert run.counter["success"] == 4 and run.counter["failure"] == 0


def test_question_mark_matches_exactly_one_character(copy_cli, examples, tmp_path):
    d, made = examples
    out = tmp_path / "out"
    run = copy_cli("--input", f"{d}/Example?.dcm", "--output", str(out))
    assert run.status == 0
    copied(out, made, ["Example1.dcm"])


def test_double_star_suffix_is_recursive(copy_cli, examples, tmp_path):
    d, made = examples
    out = tmp_path / "out"
    run = copy_cli("--input", f"{d}/**.dcm", "--output", str(out))
    assert run.status == 0
    copied(out, made, [n for n in made if n.endswith(".dcm")])
    assert run.counter["success"] == 6


def test_folder_means_everything_below_and_overlapping_patterns_copy_once(copy_cli, examples, tmp_path):
    d, made = examples
    out = tmp_path / "out"
    run = copy_cli("--input", str(d), "--input", f"{d}/Example*.dcm", "--output", str(out))
    assert run.status == 0
    copied(out, made, list(made))
    assert run.counter["success"] == 7 and run.counter["unchanged"] == 0


def test_bad_pattern_is_refused_before_the_pipeline_starts(tmp_path, capsys):
    result = run_cli_in_process(capsys, "copy", "--input", f"{tmp_path}/a/**/b.dcm", "--output", str(tmp_path / "o"))
    assert result.returncode == 2
    assert "bad input pattern" in result.stderr and "'**'" in result.stderr
    assert not (tmp_path / "o").exists()


def test_bad_inputs_each_give_one_clear_error_and_no_good_instance_is_lost(copy_cli, tmp_path):
    src = tmp_path / "in"
    sample = write_sample_set(str(src), studies=2, series_per_study=2, instances_per_series=2)
    (src / "dir.dcm").mkdir()
    out = tmp_path / "out"
    run = copy_cli("--input", f"{src}/*.dcm", "--input", f"{src}/**", "--output", str(out))
    assert run.status == 1
    assert run.summary["status"] == "completedWithErrors"
    assert run.counter["success"] == len(sample.valid) == 8
    assert run.counter["failure"] == len(sample.bad) + 1 == len(run.errors)
    for instance in sample.valid:
        assert sha256(out / instance.relative_uid_path) == sha256(instance.path)
    expectations = {
        "empty.dcm": "file is empty (0 bytes)",
        "notes.dcm": "not a DICOM Part 10 file",
        "truncated.dcm": "(truncated): element (7FE0,0010)",
        "no-preamble.dcm": "no 'DICM' prefix",
        "bad-uid.dcm": "SOPInstanceUID '1.2.3.abc' is not a valid UID",
        "leading-zero-uid.dcm":
            "SeriesInstanceUID '1.2.03' is not a valid UID: component '03' has a leading zero",
        "dir.dcm": "is a directory, not a file",
    }
    for name, words in expectations.items():
        record = run.error_for(name)
        assert words in record["Error"], record
        assert set(record) >= {"Timestamp", "Identifier", "Error"}
        assert record["Timestamp"].endswith("Z")
    assert "first 7 of 7 errors" in run.out


def test_unreadable_file_is_an_error_record(tmp_path):
    src = tmp_path / "in"
    good, _, uids = write_instance(src / "good.dcm", "good")
    secret, _, _ = write_instance(src / "secret.dcm", "secret")
    secret.chmod(0o000)
    out = tmp_path / "out"
    result = run_cli_subprocess("copy", "--input", f"{src}/*.dcm", "--output", str(out),
                                "--operation-id", "perm", honour_permissions=True)
    assert result.returncode == 1, result.stderr
    errors = [json.loads(line) for line in (out / ".dicom-transfer/perm/errors.log").read_text().splitlines()]
    assert [e["Identifier"] for e in errors] == [str(secret)]
    assert "cannot read file: Permission denied" in errors[0]["Error"]
    assert sha256(expected_path(out, uids)) == sha256(good)


def test_rerun_is_idempotent_and_rewrites_nothing(copy_cli, examples, tmp_path):
    d, made = examples
    out = tmp_path / "out"
    first = copy_cli("--input", f"{d}/**.dcm", "--output", str(out))
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*.dcm")}
    second = copy_cli("--input", f"{d}/**.dcm", "--output", str(out))
    assert first.counter["success"] == 6
    assert second.status == 0
    assert (second.counter["success"], second.counter["unchanged"], second.counter["failure"]) == (0, 6, 0)
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*.dcm")} == before


def test_existing_output_with_other_bytes_is_a_failure_unless_overwrite(copy_cli, tmp_path):
    src = tmp_path / "in"
    path, data, uids = write_instance(src / "a.dcm", "a")
    out = tmp_path / "out"
    target = expected_path(out, uids)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"something else")
    run = copy_cli("--input", str(src), "--output", str(out))
    assert run.status == 1
    assert "exists with different content" in run.error_for("a.dcm")["Error"]
    assert target.read_bytes() == b"something else"
    run = copy_cli("--input", str(src), "--output", str(out), "--overwrite")
    assert run.status == 0 and run.counter["success"] == 1
    assert target.read_bytes() == data


def test_identical_duplicates_write_once_and_count_unchanged(copy_cli, tmp_path):
    src = tmp_path / "in"
    _, data, uids = write_instance(src / "a.dcm", "dup")
    (src / "copy-of-a.dcm").write_bytes(data)
    out = tmp_path / "out"
    run = copy_cli("--input", str(src), "--output", str(out))
    assert run.status == 0
    assert (run.counter["success"], run.counter["unchanged"]) == (1, 1)
    assert expected_path(out, uids).read_bytes() == data


def test_conflicting_duplicates_the_first_written_stays_in_every_run_and_both_are_named(copy_cli, tmp_path):
    src = tmp_path / "in"
    uids = dict(study="1.2.3", series="1.2.3.4", sop="1.2.3.4.5")
    _, first, _ = write_instance(src / "a.dcm", "a", patient_id="A", **uids)
    _, second, _ = write_instance(src / "b.dcm", "b", patient_id="B", **uids)
    assert first != second
    out = tmp_path / "out"
    target = out / "1.2.3/1.2.3.4/1.2.3.4.5.dcm"
    run = copy_cli("--input", str(src), "--output", str(out))
    assert run.status == 1
    assert (run.counter["success"], run.counter["failure"]) == (1, 1)
    [record] = run.errors
    loser = record["Identifier"]
    winner = str(src / ("b.dcm" if loser.endswith("a.dcm") else "a.dcm"))
    assert "conflicting duplicate" in record["Error"] and winner in record["Error"] and loser in record["Error"]
    assert f"{winner} was written first and is kept" in record["Error"]
    kept = target.read_bytes()
    assert kept == (first if winner.endswith("a.dcm") else second)
    # a re-run keeps it: the same input stays, the other one is reported again, naming both
    run = copy_cli("--input", str(src), "--output", str(out))
    assert run.status == 1 and (run.counter["unchanged"], run.counter["failure"]) == (1, 1)
    again = run.error_for(loser.rsplit("/", 1)[1])["Error"]
    assert winner in again and "exists with different content" in again
    assert target.read_bytes() == kept


def test_overwrite_replaces_an_earlier_run_but_never_what_this_run_wrote(copy_cli, tmp_path):
    src = tmp_path / "in"
    uids = dict(study="1.2.3", series="1.2.3.4", sop="1.2.3.4.5")
    _, old, _ = write_instance(src / "a.dcm", "a", patient_id="OLD", **uids)
    out = tmp_path / "out"
    assert copy_cli("--input", str(src), "--output", str(out)).status == 0
    _, first, _ = write_instance(src / "a.dcm", "a", patient_id="A", **uids)
    _, second, _ = write_instance(src / "b.dcm", "b", patient_id="B", **uids)
    run = copy_cli("--input", str(src), "--output", str(out), "--overwrite")
    assert (run.counter["success"], run.counter["failure"]) == (1, 1)
    [record] = run.errors
    assert "conflicting duplicate" in record["Error"]
    assert (out / "1.2.3/1.2.3.4/1.2.3.4.5.dcm").read_bytes() in (first, second)


def test_azure_layout_and_report_locations(copy_cli, examples, tmp_path):
    d, made = examples
    out = tmp_path / "out"
    (d / "broken.dcm").write_bytes(b"nope")
    run = copy_cli("--input", f"{d}/Example?.dcm", "--input", f"{d}/broken.dcm", "--output", str(out),
                   "--layout", "azure", operation_id="df1ff476b83a4a3eaf11b1eac2e5ac56")
    op = out / "df1ff476b83a4a3eaf11b1eac2e5ac56"
    uids = made["Example1.dcm"][1]
    assert (op / "results" / uids[0] / uids[1] / f"{uids[2]}.dcm").read_bytes() == made["Example1.dcm"][0]
    errors = [json.loads(line) for line in (op / "errors.log").read_text().splitlines()]
    assert [e["Identifier"] for e in errors] == [str(d / "broken.dcm")]
    summary = json.loads((op / "summary.json").read_text())
    assert summary["operationId"] == "df1ff476b83a4a3eaf11b1eac2e5ac56"
    assert summary["type"] == "copy" and summary["status"] == "completedWithErrors"
    assert summary["results"]["errorHref"] == str(op / "errors.log")
    assert summary["counter"]["success"] == 1 and summary["counter"]["failure"] == 1
    assert run.status == 1


def test_template_layout_and_missing_attribute(copy_cli, tmp_path):
    src = tmp_path / "in"
    _, data, uids = write_instance(src / "a.dcm", "a", patient_id="../../escape", modality="CT")
    out = tmp_path / "out"
    run = copy_cli("--input", str(src), "--output", str(out),
                   "--layout", "{PatientID}/{Modality}/{SOPInstanceUID}.dcm")
    assert run.status == 0
    assert (out / ".._.._escape" / "CT" / f"{uids[2]}.dcm").read_bytes() == data
    assert not (tmp_path / "escape").exists()
    run = copy_cli("--input", str(src), "--output", str(tmp_path / "out2"),
                   "--layout", "{AccessionNumber}/{SOPInstanceUID}.dcm")
    assert run.status == 1
    assert "attribute AccessionNumber is missing" in run.error_for("a.dcm")["Error"]


@pytest.mark.parametrize(("template", "words"), [
    ("../{SOPInstanceUID}.dcm", "'..' path part"),
    ("{NotAKeyword}.dcm", "not a DICOM keyword"),
])
def test_dangerous_or_unknown_templates_exit_2(tmp_path, capsys, template, words):
    result = run_cli_in_process(capsys, "copy", "--input", str(tmp_path), "--output", str(tmp_path / "o"),
                                "--layout", template)
    assert result.returncode == 2 and words in result.stderr


def test_filter_file_selects_and_counts_the_rest_as_filtered(copy_cli, tmp_path):
    src = tmp_path / "in"
    sample = write_sample_set(str(src), studies=3, series_per_study=2, instances_per_series=2,
                              bad_files=False)
    first_study = [i for i in sample.valid if i.study_uid == sample.valid[0].study_uid]
    one_instance = sample.valid[-1]
    filter_file = tmp_path / "filter.txt"
    filter_file.write_text(f"/studies/{first_study[0].study_uid}\n"
                           f"/studies/{one_instance.study_uid}/series/{one_instance.series_uid}"
                           f"/instances/{one_instance.sop_uid}\n")
    out = tmp_path / "out"
    run = copy_cli("--input", str(src), "--output", str(out), "--filter-file", str(filter_file))
    assert run.status == 0
    expected = {i.relative_uid_path for i in [*first_study, one_instance]}
    assert set(tree(out)) == expected
    assert run.counter["success"] == 5 and run.counter["filtered"] == 7 and run.counter["failure"] == 0


def test_malformed_filter_file_line_exits_2_naming_the_line(tmp_path, capsys):
    filter_file = tmp_path / "filter.txt"
    filter_file.write_text("/studies/1.2\n\n/studies/1.2/serie/3\n")
    result = run_cli_in_process(capsys, "copy", "--input", str(tmp_path), "--output", str(tmp_path / "o"),
                                "--filter-file", str(filter_file))
    assert result.returncode == 2
    assert "line 3" in result.stderr and "/studies/1.2/serie/3" in result.stderr


def test_input_list(copy_cli, examples, tmp_path):
    d, made = examples
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"# the two single-digit ones\n\n{d}/Example?.dcm\n{d}/sub/Example2.dcm\n")
    out = tmp_path / "out"
    run = copy_cli("--input-list", str(listing), "--output", str(out))
    assert run.status == 0
    copied(out, made, ["Example1.dcm", "sub/Example2.dcm"])


def test_pattern_matching_nothing_warns_and_exits_0(copy_cli, tmp_path):
    out = tmp_path / "out"
    run = copy_cli("--input", f"{tmp_path}/nothing/*.dcm", "--output", str(out))
    assert run.status == 0
    assert run.counter["success"] == 0 and run.counter["failure"] == 0
    assert run.summary["unmatchedPatterns"] == [f"{tmp_path}/nothing/*.dcm"]
    assert "matched no file" in run.out


def test_dry_run_writes_no_instance_but_reports_what_would_be_written(copy_cli, examples, tmp_path):
    d, made = examples
    out = tmp_path / "out"
    run = copy_cli("--input", f"{d}/**.dcm", "--output", str(out), "--dry-run")
    assert run.status == 0
    assert tree(out) == {}
    assert run.counter["success"] == 6
    assert run.counter["bytesWritten"] == sum(len(made[n][0]) for n in made if n.endswith(".dcm"))
    assert run.summary["results"]["dryRun"] is True
    assert "would be written" in run.out


def test_invalid_invocations_exit_2(tmp_path, capsys):
    no_output = run_cli_in_process(capsys, "copy", "--input", str(tmp_path))
    assert no_output.returncode == 2 and "--output" in no_output.stderr
    typo = run_cli_in_process(capsys, "copy", "--input", str(tmp_path), "--output", str(tmp_path / "o"),
                              "--ovewrite")
    assert typo.returncode == 2 and "--ovewrite" in typo.stderr
    nothing = run_cli_in_process(capsys, "copy", "--output", str(tmp_path / "o"))
    assert nothing.returncode == 2 and "no input" in nothing.stderr


def test_multi_processing_runner_pickles_every_stage(tmp_path):
    """Two worker processes, as on a distributed runner: every DoFn must pickle."""
    src = tmp_path / "in"
    sample = write_sample_set(str(src), studies=2, series_per_study=2, instances_per_series=5)
    out = tmp_path / "out"
    result = run_cli_subprocess("copy", "--input", f"{src}/**", "--output", str(out), "--operation-id", "mp",
                                "--direct_running_mode", "multi_processing", "--direct_num_workers", "2")
    assert result.returncode == 1, result.stderr
    assert tree(out) == {i.relative_uid_path: sha256(i.path) for i in sample.valid}
    summary = json.loads((out / ".dicom-transfer/mp/summary.json").read_text())
    assert summary["counter"]["success"] == 20 and summary["counter"]["failure"] == len(sample.bad)


def test_crash_leaves_no_partial_file_under_a_final_name(copy_cli, tmp_path, monkeypatch):
    """A write that fails midway leaves nothing under the final name, and a re-run completes."""
    import os

    import dicom_transfer.io.destination as destination

    src = tmp_path / "in"
    _, data, uids = write_instance(src / "a.dcm", "a", pixel_bytes=64 * 1024)
    out = tmp_path / "out"

    def failing_copy(source_path, fd):
        os.write(fd, b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(destination, "copy_contents", failing_copy)  # from the source file
    monkeypatch.setattr(destination, "write_bytes", lambda data: lambda fd: failing_copy(None, fd))  # from memory
    run = copy_cli("--input", str(src), "--output", str(out))
    assert run.status == 1 and "No space left on device" in run.error_for("a.dcm")["Error"]
    assert [p.name for p in out.rglob("*") if p.is_file() and ".dicom-transfer" not in p.parts] == []
    monkeypatch.undo()
    run = copy_cli("--input", str(src), "--output", str(out))
    assert run.status == 0 and expected_path(out, uids).read_bytes() == data
