"""A copy's quick re-run where nothing is to be read, done by the launcher without a pipeline.

When every file the patterns match is unchanged since the earlier manifest (same source, size
and modification time as a line that arrived) and its output is still there with its size, a
re-run has nothing to read, write or send to workers: the runner's start-up and its per-element
cost would be all of its time. On the in-process runner, the launcher then compares the listing
with the earlier manifest itself, in plain Python and bounded memory (both streams sorted, with
sorted runs spilled to temporary files beyond :data:`~dicom_transfer.io.spill.RUN` items), checks
the outputs with the one listing of each series' folder that the reconciliation makes, and
writes every report the pipeline would have written, with the same functions: each manifest
line (:func:`~dicom_transfer.manifest.outcome_json`), each series' reconciliation against the
destination (:func:`~dicom_transfer.io.holdings.reconcile_with`), the summary and report.html
(:func:`~dicom_transfer.report.write_summary`).

As soon as one file must be read (new, changed, failed last time, its output gone) or the
listing says anything else (a pattern that matches nothing, a directory, an error, a file below
the destination), nothing is written and the pipeline runs as usual, with its own quick check.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import posixpath
import tempfile
from collections.abc import Iterable, Iterator
from typing import IO

from dicom_transfer import manifest
from dicom_transfer.elements import FileRef, Outcome, count_outcome
from dicom_transfer.errors import IO_ERRORS, error_text, redact, utc_now_iso
from dicom_transfer.io.files import CHUNK, is_local, split_url
from dicom_transfer.io.holdings import LayoutCheck, ask, reconcile_with
from dicom_transfer.io.listing import NotAFile, list_pattern
from dicom_transfer.io.manifests import previous_lines
from dicom_transfer.io.spill import sorted_spilled
from dicom_transfer.pipelines.copy_config import CopyConfig
from dicom_transfer.report import absolute, read_json, settings_of, write_summary, write_text
from dicom_transfer.wildcards import parse_pattern

LOG = logging.getLogger(__name__)


class MustRead(Exception):
    """A source is to be read (or the listing has something to report): the pipeline runs."""


def applies(config: CopyConfig) -> bool:
    """A quick check of a copy to local disk that writes what it copies (not a dry run)."""
    return config.quick_check and config.streams and not config.dry_run


def write_unchanged_run(config: CopyConfig) -> dict | None:
    """If nothing is to be read, write the run's reports and return its summary; else None,
    having written nothing."""
    assert config.previous_manifest is not None
    with contextlib.ExitStack() as files:
        lines = files.enter_context(tempfile.TemporaryFile("w+", encoding="utf-8"))
        counts: dict[str, int] = {}
        timeline: dict = {}
        listed = [0]

        def unchanged_entries() -> Iterator[tuple[str, str, dict]]:
            """Each unchanged file's line goes into the manifest; its reconciliation entry on."""
            for outcome in unchanged_outcomes(config, listed):
                time = utc_now_iso()
                lines.write(f"{manifest.outcome_json(outcome, time)}\n")  # an instance's final outcome
                count_outcome(counts, outcome.kind, outcome.size)
                manifest.add_to_second(timeline, time, outcome.kind, outcome.size)
                yield outcome.study, outcome.series, manifest.reconciled_entry(outcome)

        rows = files.enter_context(tempfile.TemporaryFile("w+", encoding="utf-8"))
        try:  # the listing is compared whole before the first entry comes out of the sort
            overview = _reconcile(config, sorted_spilled(unchanged_entries(), key=_series_of), rows)
        except MustRead as reason:
            LOG.debug("quick re-run: %s; the pipeline reads what changed", reason)
            return None
        except IO_ERRORS as exc:  # the pipeline reports it as it does
            LOG.debug("quick re-run: %s; the pipeline runs", error_text(exc), exc_info=True)
            return None
        reports = config.reports
        _copy_into(reports.manifest_url, lines, None)
        _copy_into(reports.reconciliation_url, rows, manifest.csv_header())
    write_text(reports.errors_url, "")
    figures = {"timeline": timeline, "failure_kinds": {}, "counts": counts}
    write_summary((0, 0), [], settings_of(reports, config.summary_extra()), file_counts=[listed[0]],
                  overview=overview, figures=figures,
                  files={"manifest": reports.manifest_url, "reconciliation": reports.reconciliation_url})
    LOG.info("all %d source(s) unchanged since %s: nothing read, no pipeline run", listed[0],
             redact(config.previous_manifest))
    return read_json(reports.summary_url)


# what an earlier line must say to stand for its source (see manifest.unchanged_outcome), no more
_KEPT = ("source", "size", "sourceVersion", "destination", "StudyInstanceUID", "SeriesInstanceUID",
         "SOPInstanceUID")


def _series_of(entry: tuple[str, str, dict]) -> tuple[str, str]:
    return entry[0], entry[1]


def unchanged_outcomes(config: CopyConfig, listed: list[int]) -> Iterator[Outcome]:
    """The ``unchanged`` outcome of every file the patterns match (counted in ``listed[0]``) whose
    earlier line says so; raises :class:`MustRead` at the first one that is not."""
    assert config.previous_manifest is not None
    refs = _distinct(sorted_spilled(_listing(config), key=manifest.source_key))
    earlier = sorted_spilled(
        ({name: line.get(name) for name in _KEPT} for line in previous_lines(
            config.previous_manifest, config.reports.manifest_url) if manifest.reusable(line)), key=_source_of)
    for ref, line in manifest.match_sorted(refs, earlier):
        listed[0] += 1
        if line is None:
            raise MustRead(f"{redact(ref.url)} is new or changed")
        yield manifest.unchanged_outcome(ref, line)  # if its output is still there: see _reconcile


def _source_of(line: dict) -> str:
    return line["source"]


def _listing(config: CopyConfig) -> Iterator[FileRef]:
    """The files the patterns match, as ``ExpandPatterns`` lists them."""
    below_destination = absolute(config.destination).rstrip("/") + "/"
    for text in config.patterns:
        try:
            pattern = parse_pattern(text)
        except ValueError as exc:
            raise MustRead(f"pattern {text!r}: {exc}") from exc
        count = 0
        for found in list_pattern(pattern):
            if isinstance(found, NotAFile):
                raise MustRead(f"{found.args[0]} is a directory")
            if found.url.startswith(below_destination):
                raise MustRead(f"{redact(found.url)} is below the destination")
            count += 1
            yield found
        if count == 0:
            raise MustRead(f"pattern {text!r} matches no file")


def _distinct(refs: Iterable[FileRef]) -> Iterator[FileRef]:
    """Sorted ``refs`` without the repeats of a file matched by several patterns."""
    previous = None
    for ref in refs:
        if ref.url != previous:
            previous = ref.url
            yield ref


def _reconcile(config: CopyConfig, entries: Iterator[tuple[str, str, dict]], out: IO[str]) -> dict:
    """Write each series' reconciliation row and, after a study's series, its total (``entries``
    sorted by series); return the summary's and the report's overview of them. One listing of
    each series' folder both checks that every output is still there with its size (else
    :class:`MustRead`) and reconciles the series, as the pipeline's step does."""
    check = LayoutCheck(config.destination, config.layout)
    overview = manifest.empty_overview()
    for study, series_of_study in itertools.groupby(entries, key=lambda entry: entry[0]):
        total = None
        for (_, series), entries_of_series in itertools.groupby(series_of_study, key=_series_of):
            lines = [entry for _, _, entry in entries_of_series]
            present = ask(check, study, series, lines)
            gone = next((line for line in lines if present is None
                         or present.get(line["SOPInstanceUID"]) != line["size"]), None)
            if gone is not None:
                raise MustRead(f"the output {redact(gone['destination'])} is gone or changed")
            row = reconcile_with(check, study, series, lines, present)
            total = manifest.add_to_study(total, row)
            series_row = row.to_dict()
            out.write(manifest.csv_row(series_row) + "\n")
            manifest.add_to_overview(overview, series_row)
        if total is not None:
            study_row = total.to_dict()
            out.write(manifest.csv_row(study_row) + "\n")
            manifest.add_to_overview(overview, study_row)
    return {**overview, "studies": manifest.least_complete(overview["studies"])}


def _copy_into(url: str, source: IO[str], header: str | None) -> None:
    """``header`` then the temporary file ``source``, streamed into ``url``."""
    fs, path = split_url(url)
    if is_local(fs):
        os.makedirs(posixpath.dirname(path) or ".", exist_ok=True)
    source.seek(0)
    with fs.open(path, "w", encoding="utf-8") as out:
        if header is not None:
            out.write(header + "\n")
        while chunk := source.read(CHUNK):
            out.write(chunk)
