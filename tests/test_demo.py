"""The README's first command: `dicom-transfer demo`."""

import json

from conftest import run_cli_subprocess


def test_demo_generates_sample_data_and_copies_it(tmp_path):
    result = run_cli_subprocess("demo", "--dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "24 instances written" in result.stdout and "6 failed" in result.stdout
    summaries = list((tmp_path / "output/.dicom-transfer").glob("*/summary.json"))
    summary = json.loads(summaries[0].read_text())
    assert summary["counter"]["success"] == 24 and summary["counter"]["failure"] == 6
    assert len(list((tmp_path / "output").rglob("*.dcm"))) == 24
