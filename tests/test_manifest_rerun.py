"""Quick re-runs of a copy where nothing changed (#17): the launcher compares the listing with the
earlier manifest and writes every report without a pipeline; anything to read runs the pipeline."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import change_behind_same_size_and_time

from dicom_transfer import manifest
from dicom_transfer.elements import FileRef
from dicom_transfer.io import spill
from dicom_transfer.pipelines import unchanged
from dicom_transfer.sample import write_sample_set

NO_PIPELINE = "nothing read, no pipeline run"


@pytest.fixture
def sample(tmp_path):
    return write_sample_set(str(tmp_path / "in"), studies=2, series_per_study=2, instances_per_series=3,
                            bad_files=False)


def lines_of(report_dir: Path, name: str = "manifest.jsonl") -> list[str]:
    return (report_dir / name).read_text().splitlines()


def without_time(lines: list[str]) -> list[str]:
    return sorted(re.sub(r',"time":"[^"]*"', "", line) for line in lines)


def comparable(summary: dict) -> dict:
    """A summary without what differs between two runs of the same command."""
    ignored = ("id", "operationId", "createdTime", "lastUpdatedTime", "durationSeconds", "throughput", "results")
    return {key: value for key, value in summary.items() if key not in ignored}


@pytest.mark.parametrize("run", [None, 3])  # 3: every sorted stream spills to temporary files
def test_a_rerun_where_nothing_changed_writes_the_pipelines_reports_without_it(copy_cli, sample, tmp_path,
                                                                               monkeypatch, run):
    monkeypatch.setattr(spill, "RUN", run or spill.RUN)
    output, source = tmp_path / "o", f"{tmp_path}/in/**"
    copy_cli("--input", source, "--output", str(output))
    quick = copy_cli("--input", source, "--input", f"{tmp_path}/in/study1/**", "--output", str(output))
    assert NO_PIPELINE in quick.err and quick.status == 0
    with monkeypatch.context() as forced:  # the same re-run through the pipeline's own quick check
        forced.setattr(unchanged, "applies", lambda config: False)
        piped = copy_cli("--input", source, "--input", f"{tmp_path}/in/study1/**", "--output", str(output))
    assert NO_PIPELINE not in piped.err
    assert quick.counter["unchanged"] == len(sample.valid) and quick.counter["filesMatched"] == len(sample.valid)
    assert comparable(quick.summary) == comparable(piped.summary)
    assert without_time(lines_of(quick.report_dir)) == without_time(lines_of(piped.report_dir))
    assert sorted(lines_of(quick.report_dir, "reconciliation.csv")) == sorted(
        lines_of(piped.report_dir, "reconciliation.csv"))
    assert (quick.report_dir / "errors.log").read_text() == ""
    assert quick.summary["results"]["reportHref"] == str(quick.report_dir / "report.html")
    assert "unchanged" in (quick.report_dir / "report.html").read_text()
    assert "unchanged" in quick.out and "reconciliation: 4 series, 4 complete" in quick.out


def test_content_changed_behind_the_same_size_and_time_is_not_read_until_checksum(copy_cli, sample, tmp_path):
    output, source = tmp_path / "o", f"{tmp_path}/in/**"
    copy_cli("--input", source, "--output", str(output))
    changed = Path(sample.valid[0].path)
    change_behind_same_size_and_time(changed)

    quick = copy_cli("--input", source, "--output", str(output))
    assert NO_PIPELINE in quick.err
    assert (quick.counter["unchanged"], quick.counter["failure"]) == (len(sample.valid), 0)

    full = copy_cli("--input", source, "--output", str(output), "--checksum")
    assert full.counter["unchanged"] == len(sample.valid) - 1
    assert "exists with different content" in full.error_for(changed.name)["Error"]


@pytest.mark.parametrize("change", ["touched", "output gone", "new file"])
def test_a_rerun_with_anything_to_read_runs_the_pipeline_and_reads_it(copy_cli, sample, tmp_path, change):
    output, source = tmp_path / "o", f"{tmp_path}/in/**"
    copy_cli("--input", source, "--output", str(output))
    first = sample.valid[0]
    expected = {"success": 1, "unchanged": len(sample.valid) - 1, "failure": 0}
    if change == "touched":  # same bytes but a new modification time: read, compared, unchanged
        os.utime(first.path, ns=(0, Path(first.path).stat().st_mtime_ns + 10**9))
        expected = {"success": 0, "unchanged": len(sample.valid), "failure": 0}
    elif change == "output gone":
        (output / first.relative_uid_path).unlink()
    else:
        extra = write_sample_set(str(tmp_path / "in" / "more"), studies=1, series_per_study=1,
                                 instances_per_series=1, bad_files=False, seed="another")
        expected = {"success": 1, "unchanged": len(sample.valid), "failure": 0}
        first = extra.valid[0]
    again = copy_cli("--input", source, "--output", str(output))
    assert NO_PIPELINE not in again.err
    assert {kind: again.counter[kind] for kind in expected} == expected
    assert (output / first.relative_uid_path).read_bytes() == Path(first.path).read_bytes()
    outcomes = {json.loads(line)["source"]: json.loads(line)["outcome"] for line in lines_of(again.report_dir)}
    assert outcomes[first.path] == ("unchanged" if change == "touched" else "success")


def test_a_rerun_where_nothing_changed_does_not_import_beam(sample, tmp_path):
    output, source = tmp_path / "o", f"{tmp_path}/in/**"
    command = ("import sys; from dicom_transfer.pipelines.cli import main; "
               f"status = main(['copy', '--input', {source!r}, '--output', {str(output)!r}, '-q']); "
               "print(status, 'apache_beam' in sys.modules)")
    first = subprocess.run([sys.executable, "-c", command], capture_output=True, text=True, check=True)
    assert first.stdout.split()[-2:] == ["0", "True"]
    again = subprocess.run([sys.executable, "-c", command], capture_output=True, text=True, check=True)
    assert again.stdout.split()[-2:] == ["0", "False"], again.stderr
    summaries = sorted(output.glob(".dicom-transfer/*/summary.json"), key=os.path.getmtime)
    assert json.loads(summaries[-1].read_text())["counter"]["unchanged"] == len(sample.valid)


def test_match_sorted_pairs_each_source_with_the_line_it_is_unchanged_since():
    refs = [FileRef("a", 1, None, "t1"), FileRef("b", 2, None, "t2"), FileRef("c", 3, None, "t3"),
            FileRef("d", 4, None, None)]
    lines = [{"source": "a", "size": 1, "sourceVersion": "t0"}, {"source": "a", "size": 1, "sourceVersion": "t1"},
             {"source": "b", "size": 9, "sourceVersion": "t2"}, {"source": "bb", "size": 2, "sourceVersion": "t2"},
             {"source": "d", "size": 4, "sourceVersion": "t4"}]
    matched = [(ref.url, line and line["sourceVersion"]) for ref, line in manifest.match_sorted(refs, lines)]
    assert matched == [("a", "t1"), ("b", None), ("c", None), ("d", None)]


def test_sorted_spilled_sorts_what_it_spills():
    items = [(n * 7919) % 1000 for n in range(1000)]
    assert list(spill.sorted_spilled(items, key=lambda n: -n, run=64)) == sorted(items, reverse=True)
    assert list(spill.sorted_spilled([], key=abs)) == []
