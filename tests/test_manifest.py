"""Proof of what moved (#17): manifest.jsonl, reconciliation.csv, the summary's reconciliation
section, `verify`, quick re-runs and report.html, checked as a user would check them."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
import threading
from pathlib import Path

import apache_beam as beam
import pytest
from conftest import change_behind_same_size_and_time, local_pipeline, run_cli_in_process

from dicom_transfer.elements import Outcome
from dicom_transfer.errors import ErrorRecord
from dicom_transfer.io.holdings import LayoutCheck
from dicom_transfer.layout import Layout
from dicom_transfer.pipelines.cli import main
from dicom_transfer.sample import instance_bytes, uid_for, write_sample_set
from dicom_transfer.transforms.manifest import AuditRun, TargetCheck
from dicom_transfer.transforms.migrate_targets import MigrationTarget


@pytest.fixture
def sample(tmp_path):
    return write_sample_set(str(tmp_path / "in"), studies=2, series_per_study=2, instances_per_series=3)


def manifest_lines(report_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (report_dir / "manifest.jsonl").read_text().splitlines()]


def reconciliation(report_dir: Path) -> list[dict]:
    with open(report_dir / "reconciliation.csv", newline="") as source:
        return list(csv.DictReader(source))


def test_a_copy_writes_one_manifest_line_per_instance_handled(copy_cli, sample, tmp_path):
    run = copy_cli("--input", f"{tmp_path}/in/**", "--output", str(tmp_path / "o"))
    lines = manifest_lines(run.report_dir)
    assert len(lines) == len(sample.valid) + len(sample.bad)
    succeeded = {line["SOPInstanceUID"]: line for line in lines if line["outcome"] == "success"}
    assert set(succeeded) == {instance.sop_uid for instance in sample.valid}
    for instance in sample.valid:
        line = succeeded[instance.sop_uid]
        assert (line["StudyInstanceUID"], line["SeriesInstanceUID"]) == (instance.study_uid, instance.series_uid)
        assert line["source"] == instance.path and line["size"] == instance.size
        assert Path(line["destination"]).read_bytes() == Path(instance.path).read_bytes()
        # read whole to be validated and written from those bytes: their SHA-256, re-computed here
        assert line["checksum"] == {"sha256": hashlib.sha256(Path(instance.path).read_bytes()).hexdigest()}
    failures = [line for line in lines if line["outcome"] == "failure"]
    assert sorted(line["source"] for line in failures) == sorted(record["Identifier"] for record in run.errors)
    assert all(line["error"] and line["stage"] for line in failures)
    assert run.summary["results"]["manifestHref"] == str(run.report_dir / "manifest.jsonl")
    assert run.summary["results"]["reportHref"] == str(run.report_dir / "report.html")
    # what the terminal shows at the end
    assert "  reconciliation: 4 series, 4 complete, 0 incomplete (0 instances missing)" in run.out.splitlines()
    assert f"  report:  {run.report_dir / 'report.html'}" in run.out.splitlines()


def test_a_file_copied_by_the_kernel_has_no_checksum_it_never_had(copy_cli, tmp_path):
    """Larger files go from file to file by sendfile(2), never through the worker's memory: the
    manifest gives them no checksum rather than one that was not checked."""
    (tmp_path / "in").mkdir()
    uids = (uid_for("big", 0), uid_for("big", 0, 0), uid_for("big", 0, 0, 0))
    big = tmp_path / "in" / "big.dcm"
    big.write_bytes(instance_bytes(*uids, pixel_bytes=200 * 1024))
    run = copy_cli("--input", str(big), "--output", str(tmp_path / "o"))
    (line,) = manifest_lines(run.report_dir)
    assert line["outcome"] == "success" and line["size"] == big.stat().st_size
    assert Path(line["destination"]).read_bytes() == big.read_bytes() and line["checksum"] == {}


def test_the_reconciliation_has_a_row_per_series_and_a_total_per_study(copy_cli, sample, tmp_path):
    run = copy_cli("--input", f"{tmp_path}/in/**", "--output", str(tmp_path / "o"))
    rows = reconciliation(run.report_dir)
    series = [row for row in rows if row["level"] == "series"]
    studies = [row for row in rows if row["level"] == "study"]
    assert len(series) == 4 and len(studies) == 2
    assert all((row["found"], row["stored"], row["present"], row["complete"]) == ("3", "3", "3", "true")
               for row in series)
    assert all((row["stored"], row["present"]) == ("6", "6") for row in studies)
    section = run.summary["reconciliation"]
    assert (section["series"], section["complete"], section["incomplete"]) == (4, 4, 0)
    assert run.summary["status"] == "completedWithErrors"  # the sample's bad files


def test_verify_names_exactly_the_missing_and_the_stray_instances(copy_cli, sample, tmp_path, capsys):
    output = tmp_path / "o"
    run = copy_cli("--input", f"{tmp_path}/in/**", "--output", str(output))
    gone = sample.valid[1], sample.valid[4]
    for instance in gone:
        (output / instance.relative_uid_path).unlink()
    stray_series = output / sample.valid[0].study_uid / sample.valid[0].series_uid
    shutil.copy(output / sample.valid[0].relative_uid_path, stray_series / "1.2.3.999.dcm")

    status = main(["verify", "--manifest", str(run.report_dir / "manifest.jsonl"), "--output", str(output),
                   "--operation-id", "check1"])
    printed = capsys.readouterr().out
    assert status == 1, printed
    report_dir = run.report_dir / "check1"
    rows = [row for row in reconciliation(report_dir) if row["level"] == "series"]
    missing = {sop for row in rows for sop in row["missingSOPInstanceUIDs"].split()}
    extra = {sop for row in rows for sop in row["extraSOPInstanceUIDs"].split()}
    assert missing == {instance.sop_uid for instance in gone}
    assert extra == {"1.2.3.999"}
    summary = json.loads((report_dir / "summary.json").read_text())
    assert summary["type"] == "verify" and summary["status"] == "completedWithErrors"
    assert summary["reconciliation"]["incomplete"] == 2  # two series miss one each (one also has the stray)
    assert summary["counter"]["success"] == len(sample.valid) - 2
    assert "missing on the destination" in printed
    nothing_moved = {p for p in output.rglob("*.dcm")}
    assert len(nothing_moved) == len(sample.valid) - 2 + 1


def test_a_rerun_counts_unchanged_sources_without_reading_them(copy_cli, sample, tmp_path):
    output = tmp_path / "o"
    first = copy_cli("--input", f"{tmp_path}/in/**", "--output", str(output))
    assert first.counter["success"] == len(sample.valid)
    # Same size and modification time, other bytes: a quick check cannot see it, so it is not read.
    changed = Path(sample.valid[0].path)
    change_behind_same_size_and_time(changed)

    quick = copy_cli("--input", f"{tmp_path}/in/**", "--output", str(output))
    assert (quick.counter["success"], quick.counter["unchanged"]) == (0, len(sample.valid))
    unchanged = [line for line in manifest_lines(quick.report_dir) if line["outcome"] == "unchanged"]
    assert len(unchanged) == len(sample.valid) and all(line["sourceVersion"] for line in unchanged)

    full = copy_cli("--input", f"{tmp_path}/in/**", "--output", str(output), "--checksum")
    assert full.counter["unchanged"] == len(sample.valid) - 1
    assert "exists with different content" in full.error_for(changed.name)["Error"]

    # A source touched since (new mtime) or an output gone is read and compared again.
    changed.write_bytes(Path(output / sample.valid[0].relative_uid_path).read_bytes())
    (output / sample.valid[1].relative_uid_path).unlink()
    again = copy_cli("--input", f"{tmp_path}/in/**", "--output", str(output))
    assert (again.counter["success"], again.counter["unchanged"], again.counter["failure"]) == (
        1, len(sample.valid) - 1, len(sample.bad))


def test_quick_rerun_options_with_a_filter_file_or_deidentification(copy_cli, sample, tmp_path, capsys):
    """Those read every source: an explicit --previous-manifest is refused (exit 2), and an earlier
    manifest is neither looked for nor announced."""
    output = tmp_path / "o"
    copy_cli("--input", f"{tmp_path}/in/**", "--output", str(output))
    earlier = next(output.glob(".dicom-transfer/*/manifest.jsonl"))
    filter_file = tmp_path / "filter.txt"
    filter_file.write_text(f"/studies/{sample.valid[0].study_uid}\n")
    refused = run_cli_in_process(capsys, "copy", "--input", f"{tmp_path}/in/**", "--output", str(output),
                                 "--filter-file", str(filter_file), "--previous-manifest", str(earlier))
    assert refused.returncode == 2 and "--previous-manifest does not apply with --filter-file" in refused.stderr
    filtered = copy_cli("--input", f"{tmp_path}/in/**", "--output", str(output), "--filter-file", str(filter_file))
    assert filtered.counter["unchanged"] == 6 and filtered.counter["success"] == 0  # read and compared
    assert "are not read again" not in filtered.err
    quick = copy_cli("--input", f"{tmp_path}/in/**", "--output", str(output))  # what it would have said
    assert "are not read again" in quick.err


def test_the_manifest_and_reconciliation_of_20000_instances(tmp_path):
    """Written by the pipeline from one part file per bundle: every line arrives, nothing is lost
    or doubled, and a series is reconciled against the destination's listing of it."""
    output = tmp_path / "o"
    layout = Layout.parse("uid")
    outcomes, series_count, per_series = [], 200, 100
    for se in range(series_count):
        folder = output / "1.2" / f"1.2.{se}"
        folder.mkdir(parents=True)
        for n in range(per_series):
            sop = f"1.2.{se}.{n}"
            if not (se == 7 and n == 3):  # one instance the destination lacks
                (folder / f"{sop}.dcm").write_bytes(b"x" * 10)
            outcomes.append(Outcome("success", 10, f"in/{sop}", str(folder / f"{sop}.dcm"), "1.2", f"1.2.{se}", sop))
    failures = [ErrorRecord.create("in/broken", "invalid DICOM (truncated): short", "validate")]
    with local_pipeline() as pipeline:
        _ = ((pipeline | "Outcomes" >> beam.Create(outcomes), pipeline | "Failures" >> beam.Create(failures))
             | AuditRun(str(tmp_path / "r" / "manifest.jsonl"), str(tmp_path / "r" / "reconciliation.csv"),
                        LayoutCheck(str(output), layout)))
    lines = (tmp_path / "r" / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == len(outcomes) + 1 and len({json.loads(line)["source"] for line in lines}) == len(lines)
    assert not list((tmp_path / "r").glob(".*parts"))  # the part files are gone
    rows = reconciliation(tmp_path / "r")
    incomplete = [row for row in rows if row["complete"] == "false"]
    assert len([row for row in rows if row["level"] == "series"]) == series_count
    assert sorted((row["level"], row["missingSOPInstanceUIDs"]) for row in incomplete) == [
        ("series", "1.2.7.3"), ("study", "1.2.7.3")]


class _HoldsAllButOne(MigrationTarget):
    """A destination that holds every instance but ``1.2.<series>.0`` of its series, and answers
    a question only once ``questions_at_once`` of them are being asked together."""

    questions_at_once = 3

    def setup(self) -> None:
        self.together = threading.Barrier(self.questions_at_once, timeout=20)

    def held(self, study: str, series: str) -> set[str]:
        self.together.wait()  # broken (and the run failed) if the questions came one at a time
        return {f"{series}.{n}" for n in range(1, 4)}


def test_a_destination_that_answers_several_questions_at_once_is_asked_them_at_once(tmp_path):
    """The reconciliation asks a DICOMweb store (``questions_at_once``) about several series at once,
    and every row is still that of its own series."""
    outcomes = [Outcome("success", 10, f"in/1.2.{se}.{n}", f"http://host/{se}/{n}", "1.2", f"1.2.{se}",
                        f"1.2.{se}.{n}") for se in range(6) for n in range(4)]
    with beam.Pipeline() as pipeline:
        _ = ((pipeline | "Outcomes" >> beam.Create(outcomes), pipeline | "Failures" >> beam.Create([]))
             | AuditRun(str(tmp_path / "manifest.jsonl"), str(tmp_path / "reconciliation.csv"),
                        TargetCheck(_HoldsAllButOne())))
    rows = {row["SeriesInstanceUID"]: row for row in reconciliation(tmp_path) if row["level"] == "series"}
    assert sorted(rows) == [f"1.2.{se}" for se in range(6)]
    assert all(row["missingSOPInstanceUIDs"] == f"{series}.0" and row["present"] == "3"
               for series, row in rows.items())


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(chromium() is None, reason="needs Debian's chromium (scripts/setup-env installs it)")
def test_report_html_renders_in_headless_chromium(copy_cli, sample, tmp_path):
    run = copy_cli("--input", f"{tmp_path}/in/**", "--output", str(tmp_path / "o"))
    page = run.report_dir / "report.html"
    text = page.read_text()
    assert "<script" not in text and "http://" not in text and "https://" not in text  # self-contained
    browser = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*browser, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr
    html = dom.stdout
    assert 'id="counter-success"' in html and f"<b>{len(sample.valid)}</b>" in html
    assert f"<b>{len(sample.bad)}</b>" in html  # failures
    assert html.count('class="study"') == 2 and "<svg" in html and 'id="throughput"' in html
    assert "truncated" in html and "part10" in html  # failures grouped by kind
    for name in ("errors.log", "manifest.jsonl", "reconciliation.csv"):
        assert f'href="{name}"' in html
    shot = tmp_path / "shot.png"
    done = subprocess.run([*browser, f"--screenshot={shot}", "--window-size=1000,1400", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.exists(), done.stderr
    assert _distinct_colours(shot) > 3  # not a blank page


def _distinct_colours(png: Path) -> int:
    """How many distinct colours the screenshot holds (a blank page has one)."""
    import struct
    import zlib

    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    chunks, pos = [], 8
    while pos < len(data):
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        if data[pos + 4:pos + 8] == b"IDAT":
            chunks.append(data[pos + 8:pos + 8 + length])
        pos += 12 + length
    raw = zlib.decompress(b"".join(chunks))
    channels = {2: 3, 6: 4}[colour]
    stride = width * channels + 1
    seen: set[bytes] = set()
    for row in range(0, height, 7):  # filtered rows still differ between a blank and a drawn page
        seen.add(hashlib.md5(raw[row * stride:(row + 1) * stride], usedforsecurity=False).digest())
    return len(seen)


def test_series_entries_packed_for_the_grouping_come_back_as_the_lines_they_were():
    """The reconciliation's entries cross the grouping by series as one compact text per series
    and bundle; unpacked, they are the reconciled fields of the lines, whatever the paths hold."""
    from dicom_transfer.manifest import SeriesEntries, unpack_series_entries

    lines = [
        {"outcome": "success", "SOPInstanceUID": "1.2.3", "size": 7830, "destination": "/out/a/b/1.2.3.dcm",
         "source": "/in/x.dcm"},
        {"outcome": "unchanged", "SOPInstanceUID": "1.2.4", "size": 12, "destination": "/out/a/b/1.2.4.dcm"},
        {"outcome": "success", "SOPInstanceUID": "1.2.5", "size": 1,
         "destination": 'gs://bucket/we"ird\tpath\n/é/1.2.5.dcm'},
        {"outcome": "failure", "SOPInstanceUID": "1.2.6", "size": None, "destination": None},
        {"outcome": "filtered", "SOPInstanceUID": "1.2.7", "size": 5, "destination": "no-folder.dcm"},
    ]
    first, second = SeriesEntries(), SeriesEntries()
    for line in lines[:3]:
        first.add(line)
    for line in lines[3:]:
        second.add(line)
    assert (first.count, second.count) == (3, 2)
    wanted = [{name: line[name] for name in ("outcome", "SOPInstanceUID", "size", "destination")}
              for line in lines]
    assert sorted(unpack_series_entries([first.packed(), second.packed()]), key=lambda e: e["SOPInstanceUID"]) \
        == wanted
    assert first.packed().count("/out/a/b/") == 1  # a shared folder is named once
