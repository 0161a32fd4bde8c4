"""Run reports: the summary document (Azure operation-status shape) and its helpers."""

from __future__ import annotations

import dataclasses
import json
import os
import uuid

from dicom_transfer.errors import redact, redact_url, utc_now_iso
from dicom_transfer.io.files import is_local, split_url

COMPLETED = "completed"
COMPLETED_WITH_ERRORS = "completedWithErrors"
FAILED = "failed"


@dataclasses.dataclass(frozen=True)
class RunReports:
    """Identity of one run and where its errors.log and summary go."""

    operation_type: str
    operation_id: str
    created_time: str
    errors_url: str
    summary_url: str
    dry_run: bool = False


def new_operation_id() -> str:
    return uuid.uuid4().hex


def default_report_dir(destination: str, layout: str, operation_id: str) -> str:
    """Where errors.log and summary.json go unless the user says otherwise.

    ``azure``: ``DEST/<operation id>/`` (as the Azure export does); otherwise
    ``DEST/.dicom-transfer/<operation id>/``, one folder per run.
    """
    base = destination.rstrip("/")
    if layout == "azure":
        return f"{base}/{operation_id}"
    return f"{base}/.dicom-transfer/{operation_id}"


def build_summary(
    *,
    operation_id: str,
    operation_type: str,
    created_time: str,
    counter: dict[str, int],
    error_href: str,
    status: str | None = None,
    extra: dict | None = None,
    results: dict | None = None,
) -> dict:
    """The summary document; ``status`` is derived from the failure count unless given."""
    if status is None:
        status = COMPLETED_WITH_ERRORS if counter.get("failure", 0) else COMPLETED
    return {
        "operationId": operation_id,
        "type": operation_type,
        "createdTime": created_time,
        "lastUpdatedTime": utc_now_iso(),
        "status": status,
        "counter": counter,
        "results": {"errorHref": redact_url(error_href), **(results or {})},
        **(extra or {}),
    }


def write_text(url: str, text: str) -> None:
    """Write ``text`` to ``url``; on local disk atomically (temporary file, then rename)."""
    fs, path = split_url(url)
    if is_local(fs):
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        temporary = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.partial")
        with open(temporary, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
        return
    with fs.open(path, "w") as out:
        out.write(text)


def read_json(url: str) -> dict:
    fs, path = split_url(url)
    with fs.open(path, "r") as source:
        return json.load(source)


def human_summary(summary: dict, summary_url: str, dry_run: bool = False) -> str:
    """A few lines for people, printed at the end of a run."""
    counter = summary["counter"]
    verb = {"import": "stored", "export": "exported"}.get(summary["type"], "written")
    if dry_run:
        verb = f"would be {verb}"
    lines = [
        f"{summary['type']} {summary['operationId']}: {summary['status']}",
        f"  {counter.get('success', 0)} instances {verb} "
        f"({counter.get('bytesWritten', 0) / 1e6:.1f} MB), "
        f"{counter.get('unchanged', 0)} unchanged, {counter.get('failure', 0)} failed"
        + (f", {counter['filtered']} filtered out" if counter.get("filtered") else ""),
    ]
    unmatched = summary.get("unmatchedPatterns") or []
    for pattern in unmatched:
        lines.append(f"  warning: pattern {redact(pattern)!r} matched no file")
    if counter.get("failure", 0):
        lines.append(f"  errors:  {summary['results']['errorHref']}")
    lines.append(f"  summary: {redact_url(summary_url)}")
    return "\n".join(lines)
