"""Run reports: the summary document (Azure operation-status shape) and its helpers."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import os
import stat
import uuid

from dicom_transfer.errors import redact, redact_url, utc_now_iso
from dicom_transfer.html_report import render_report
from dicom_transfer.io.files import is_local, split_url
from dicom_transfer.metrics import FAILURE, FILTERED, SUCCESS, UNCHANGED
from dicom_transfer.progress import format_bytes, plural
from dicom_transfer.wildcards import split_scheme

COMPLETED = "completed"
COMPLETED_WITH_ERRORS = "completedWithErrors"
FAILED = "failed"
CANCELED = "canceled"  # Azure's operation status for a stopped operation


@dataclasses.dataclass(frozen=True)
class RunReports:
    """Identity of one run and where its errors.log and summary go."""

    operation_type: str
    operation_id: str
    created_time: str
    errors_url: str
    summary_url: str
    dry_run: bool = False
    # Where the launcher also puts the summary JSON once the run ends: "-" (standard output) or a
    # device or pipe (/dev/stdout, a FIFO), which cannot be read back from. The pipeline writes
    # ``summary_url`` (then the default location) as usual.
    summary_copy: str | None = None
    manifest: str | None = None  # --manifest; default: beside the summary

    @property
    def summary_to_stdout(self) -> bool:
        return self.summary_copy == "-"

    def beside_summary(self, name: str) -> str:
        return f"{self.summary_url.rpartition('/')[0] or '.'}/{name}"

    @property
    def manifest_url(self) -> str:
        return self.manifest or self.beside_summary("manifest.jsonl")

    @property
    def reconciliation_url(self) -> str:
        return self.beside_summary("reconciliation.csv")

    @property
    def html_url(self) -> str:
        return self.beside_summary("report.html")


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
    error_href: str | None,
    status: str | None = None,
    extra: dict | None = None,
    results: dict | None = None,
) -> dict:
    """The summary document; ``status`` is derived from the failure count unless given.

    Adds the run's duration and throughput (instances handled and bytes moved
    per second, from ``createdTime`` to now). ``error_href`` is None when no
    errors.log was written (a run that stopped before its end).
    """
    if status is None:
        status = COMPLETED_WITH_ERRORS if counter.get(FAILURE, 0) else COMPLETED
    updated = utc_now_iso()
    seconds = max(_seconds_between(created_time, updated), 1e-3)
    handled = sum(counter.get(kind, 0) for kind in (SUCCESS, UNCHANGED, FAILURE))
    links = {"errorHref": absolute(redact_url(error_href))} if error_href else {}
    return {
        "operationId": operation_id,
        "type": operation_type,
        "createdTime": created_time,
        "lastUpdatedTime": updated,
        "status": status,
        "counter": counter,
        "results": {**links, **(results or {})},
        "durationSeconds": round(seconds, 3),
        "throughput": {"instancesPerSecond": round(handled / seconds, 2),
                       "bytesPerSecond": round(counter.get("bytesWritten", 0) / seconds)},
        **(extra or {}),
    }


def absolute(url: str) -> str:
    """``url`` unchanged, or a local path made absolute (a summary is read from elsewhere)."""
    return url if split_scheme(url)[0] else os.path.abspath(url)


def _seconds_between(start: str, end: str) -> float:
    try:
        parse = [_dt.datetime.fromisoformat(t.replace("Z", "+00:00")) for t in (start, end)]
    except ValueError:
        return 0.0
    return (parse[1] - parse[0]).total_seconds()


def write_text(url: str, text: str) -> None:
    """Write ``text`` to ``url``; on local disk atomically (temporary file, then rename).

    A local path that is not a regular file (``/dev/stdout``, a named pipe) is
    written to in place, never replaced by a file.
    """
    fs, path = split_url(url)
    if is_local(fs):
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISREG(os.stat(path).st_mode):
                with open(path, "w", encoding="utf-8") as out:
                    out.write(text)
                return
        directory = os.path.dirname(path) or "."
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
    verb = {"import": "stored", "export": "exported", "migrate": "migrated",
            "verify": "verified"}.get(summary["type"], "written")
    if dry_run:
        verb = f"would be {verb}"
    success = counter.get(SUCCESS, 0)
    parts = [f"{plural(success, 'instance')} {verb} ({format_bytes(counter.get('bytesWritten', 0))})",
             f"{counter.get('unchanged', 0):,} unchanged", f"{counter.get('failure', 0):,} failed"]
    if counter.get("deidentified"):
        parts.append(f"{counter['deidentified']:,} de-identified")
    if counter.get(FILTERED):
        parts.append(f"{counter['filtered']:,} filtered out")
    seconds = summary.get("durationSeconds")
    lines = [f"{summary['type']} {summary['operationId']}: {summary['status']}"
             + (f" in {seconds:.1f} s" if seconds else ""),
             "  " + ", ".join(parts)]
    for kind, values in (summary.get("unmatched") or {}).items():
        for value in values:
            what, verb = UNMATCHED_KINDS.get(kind, (kind, "matched nothing"))
            lines.append(f"  warning: {what} {redact(value)!r} {verb}")
    section = summary.get("reconciliation")
    if section and section.get("series"):
        lines.append(f"  reconciliation: {plural(section['series'], 'series', 'series')}, {section['complete']:,} "
                     f"complete, {section['incomplete']:,} incomplete ({section['instancesMissing']:,} instances "
                     f"missing{'' if section.get('destinationChecked') else ', destination not asked'})")
    results = summary["results"]
    if counter.get(FAILURE, 0) and results.get("errorHref"):
        lines.append(f"  errors:  {results['errorHref']}")
    lines.append(f"  summary: {absolute(redact_url(summary_url))}")
    if results.get("reportHref"):
        lines.append(f"  report:  {results['reportHref']}")
    return "\n".join(lines)


UNMATCHED_KINDS = {"patterns": ("pattern", "matched no file"),
                   "filterLines": ("filter-file line", "selected no instance")}


# -- the summary and report.html at the end of a run ----------------------------------------------

FILES_MATCHED = "filesMatched"


def report_settings(*, errors_url: str, summary_url: str, operation_id: str, operation_type: str,
                    created_time: str, dry_run: bool = False, extra: dict | None = None,
                    html_url: str | None = None) -> dict:
    """What :func:`write_summary` needs to know of a run besides its figures."""
    return {"errors_url": errors_url, "summary_url": summary_url, "operation_id": operation_id,
            "operation_type": operation_type, "created_time": created_time, "dry_run": dry_run,
            "extra": extra or {}, "html_url": html_url}


def settings_of(reports: RunReports, extra: dict | None = None) -> dict:
    """The :func:`report_settings` of the run ``reports`` describes."""
    return report_settings(errors_url=reports.errors_url, summary_url=reports.summary_url,
                           operation_id=reports.operation_id, operation_type=reports.operation_type,
                           created_time=reports.created_time, dry_run=reports.dry_run, extra=extra,
                           html_url=reports.html_url)


def write_summary(errors: tuple[int, int], unmatched: list[tuple[str, str]], settings: dict,
                   counts: dict[str, int] | None = None, file_counts: list[int] | None = None,
                   overview: dict | None = None, files: dict[str, str] | None = None,
                   figures: dict | None = None) -> str:
    """Write the summary (and, with the audit's ``overview``, ``files`` and ``figures``, report.html).
    The outcome ``counts`` are the audit's figures' when there is an audit."""
    failures, internal = errors
    counter = {"success": 0, "failure": failures, "unchanged": 0, "filtered": 0, "bytesWritten": 0}
    counter.update(figures["counts"] if figures is not None else counts or {})
    counter["failure"] = failures
    if file_counts is not None:
        counter[FILES_MATCHED] = sum(file_counts)
    problems = {}
    if internal:  # a bug, not bad input: the run is not to be trusted as "completed with errors"
        problems = {"internalErrors": internal, "error": f"{internal} failure(s) came from a bug in dicom-transfer "
                    "(errors.log: 'internal error'; the traceback is in the worker's log): please report it"}
    extra = {**settings.get("extra", {}), **problems, "unmatched": _by_kind(unmatched),
             "unmatchedPatterns": sorted(value for kind, value in unmatched if kind == "patterns")}
    status = FAILED if internal else None
    if overview is not None:
        extra["reconciliation"] = overview["section"]
        if overview["section"]["incomplete"] and status is None:
            status = COMPLETED_WITH_ERRORS
    files = files or {}
    summary = build_summary(
        operation_id=settings["operation_id"],
        operation_type=settings["operation_type"],
        created_time=settings["created_time"],
        counter=counter,
        error_href=settings["errors_url"],
        status=status,
        extra=extra,
        results={**_results(settings, counter), **_links(
            manifestHref=files.get("manifest"), reconciliationHref=files.get("reconciliation"),
            reportHref=settings.get("html_url") if overview is not None and figures is not None else None)},
    )
    write_text(settings["summary_url"], json.dumps(summary, indent=2) + "\n")
    if overview is not None and figures is not None and settings.get("html_url"):
        write_html_report(summary, settings["summary_url"], html_url=settings["html_url"], overview=overview,
                          figures=figures)
    return settings["summary_url"]


def _links(**urls: str | None) -> dict[str, str]:
    return {name: absolute(redact_url(url)) for name, url in urls.items() if url}


def _by_kind(unmatched: list[tuple[str, str]]) -> dict[str, list[str]]:
    """``{"patterns": [...], "filterLines": [...]}``: what selected nothing, sorted."""
    grouped: dict[str, list[str]] = {}
    for kind, value in unmatched:
        grouped.setdefault(kind, []).append(value)
    return {kind: sorted(values) for kind, values in sorted(grouped.items())}


def _results(settings: dict, counter: dict[str, int]) -> dict:
    results = {"dryRun": settings.get("dry_run", False)}
    if settings["operation_type"] == "export":  # Azure's export status fields
        results.update(exported=counter["success"], skipped=counter["failure"])
    return results


def write_html_report(summary: dict, summary_url: str, *, html_url: str, overview: dict, figures: dict) -> None:
    """Write report.html from the summary just written and the run's figures."""
    results = summary.get("results", {})
    links = {"errors.log": results.get("errorHref"), "manifest": results.get("manifestHref"),
             "reconciliation": results.get("reconciliationHref"), "summary": absolute(redact_url(summary_url))}
    page = render_report(summary, timeline=figures["timeline"], studies=overview["studies"],
                         study_count=overview["study_count"], failure_kinds=figures["failure_kinds"],
                         page_url=absolute(redact_url(html_url)), links=links)
    write_text(html_url, page)

