"""Turn failures and outcomes into errors.log, the summary and the ``failure`` counter."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics

from dicom_transfer import metrics
from dicom_transfer.elements import count_outcome, merge_counts
from dicom_transfer.errors import INTERNAL_ERROR, ErrorRecord, to_errors_log_line
from dicom_transfer.io.files import is_local, split_url
from dicom_transfer.progress import ProgressLog
from dicom_transfer.report import RunReports, report_settings, write_summary
from dicom_transfer.transforms.dofn import DoFn
from dicom_transfer.transforms.manifest import AuditRun


class CountOutcomes(beam.CombineFn):
    """Counts outcomes by kind and adds up the bytes of successful ones."""

    def create_accumulator(self) -> dict[str, int]:
        return {}

    def add_input(self, accumulator: dict[str, int], outcome: tuple) -> dict[str, int]:
        count_outcome(accumulator, outcome[0], outcome[1])
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[dict[str, int]]) -> dict[str, int]:
        return merge_counts(accumulators)

    def extract_output(self, accumulator: dict[str, int]) -> dict[str, int]:
        return accumulator


class _CountProgressFn(DoFn):
    """Reports each final outcome and failure to the run's progress display as it happens, and
    makes each outcome a ``(kind, size)`` pair."""

    def setup(self) -> None:
        self.progress = ProgressLog("report")

    def process(self, element) -> Iterator:
        if isinstance(element, ErrorRecord):
            self.progress.report(metrics.FAILURE)
            yield to_errors_log_line(element)
            return
        self.progress.outcome(element[0], element[1])
        yield element[0], element[1]

    def finish_bundle(self) -> None:
        self.progress.flush()


class _WriteErrorsLogFn(DoFn):
    """Writes every error line into one errors.log and counts ``failure``; yields
    ``(failures, internal errors)`` — the records of bugs in this product, which fail the run."""

    def __init__(self) -> None:
        self.failure = Metrics.counter(metrics.NAMESPACE, metrics.FAILURE)

    def process(self, url: str, lines: Iterable[str]) -> Iterator[tuple[int, int]]:
        fs, path = split_url(url)
        if is_local(fs):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        count = internal = 0
        with fs.open(path, "w", encoding="utf-8") as out:
            for line in lines:
                out.write(line + "\n")
                count += 1
                if INTERNAL_ERROR in line and INTERNAL_ERROR in json.loads(line)["Error"]:
                    internal += 1
        self.failure.inc(count)
        yield count, internal


class WriteReports(beam.PTransform):
    """Write errors.log (JSON lines ``{Timestamp, Identifier, Error, Stage}``) and the summary.

    ``errors.log`` is always written, empty when nothing failed, so that its
    ``errorHref`` is valid. The summary is written last, inside the pipeline,
    so it is correct on runners whose launcher does not wait for the job.

    Its input is ``(failures, outcomes, unmatched[, file_counts])``: ErrorRecords,
    Outcomes, ``(kind, value)`` pairs for what selected nothing (``ExpandPatterns``'
    ``unmatched`` output, or an empty PCollection) and, optionally, ``ExpandPatterns``'
    ``file_counts`` (added up as ``filesMatched``).

    Example::

        (failures, written.outcomes, files.unmatched) | WriteReports(
            errors_url="out/errors.log", summary_url="out/summary.json", operation_id="run-1",
            operation_type="copy", created_time=utc_now_iso())
    """

    def __init__(self, *, errors_url: str, summary_url: str, operation_id: str,
                 operation_type: str, created_time: str, dry_run: bool = False,
                 extra: dict | None = None, audit: AuditRun | None = None, html_url: str | None = None) -> None:
        super().__init__()
        self.audit = audit  # the manifest and reconciliation, when the run writes them
        self.html_url = html_url
        self.settings = report_settings(errors_url=errors_url, summary_url=summary_url, operation_id=operation_id,
                                        operation_type=operation_type, created_time=created_time, dry_run=dry_run,
                                        extra=extra, html_url=html_url)

    @classmethod
    def for_run(cls, reports: RunReports, extra: dict | None = None, check=None,
                answers: beam.PCollection | None = None) -> WriteReports:
        """The reports of the run that ``reports`` describes: errors.log, the summary, the manifest,
        the reconciliation (asking the destination with ``check``, unless ``answers`` the store
        step got settle a series, see ``transforms.manifest``) and report.html."""
        audit = AuditRun(reports.manifest_url, reports.reconciliation_url, None if reports.dry_run else check,
                         answers=answers)
        return cls(errors_url=reports.errors_url, summary_url=reports.summary_url,
                   operation_id=reports.operation_id, operation_type=reports.operation_type,
                   created_time=reports.created_time, dry_run=reports.dry_run, extra=extra,
                   audit=audit, html_url=reports.html_url)

    def expand(self, inputs: tuple) -> beam.PCollection:
        failures, outcomes, unmatched, *file_counts = inputs
        pipeline = failures.pipeline
        lines = failures | "ToErrorsLogLines" >> beam.ParDo(_CountProgressFn())
        written = (
            pipeline
            | "ErrorsLogUrl" >> beam.Create([self.settings["errors_url"]])
            | "WriteErrorsLog" >> beam.ParDo(_WriteErrorsLogFn(), beam.pvalue.AsIter(lines))
        )
        extra: dict = {"file_counts": beam.pvalue.AsList(file_counts[0])} if file_counts else {}
        if self.audit is not None:  # the step that writes the manifest counts the outcomes too
            extra.update(((outcomes, failures) | "Audit" >> self.audit).side_inputs())
        else:
            # One combine, on the outcomes alone: on the DirectRunner a Flatten of per-instance
            # PCollections would hold every element in memory until the run's end.
            extra["counts"] = beam.pvalue.AsSingleton(
                outcomes
                | "OutcomeKinds" >> beam.ParDo(_CountProgressFn())
                | "CountOutcomes" >> beam.CombineGlobally(CountOutcomes()))
        return written | "WriteSummary" >> beam.Map(
            write_summary,
            unmatched=beam.pvalue.AsList(unmatched),
            settings=self.settings,
            **extra,
        )
