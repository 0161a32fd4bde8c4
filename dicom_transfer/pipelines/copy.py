"""The ``copy`` pipeline: storage to storage, re-organised per UID."""

from __future__ import annotations

import dataclasses

import apache_beam as beam

from dicom_transfer.errors import redact
from dicom_transfer.io.files import scheme_of
from dicom_transfer.io.holdings import LayoutCheck
from dicom_transfer.layout import Layout
from dicom_transfer.pipelines.deid import DeidConfig, deidentify_stage, staging_url
from dicom_transfer.pipelines.inputs import read_inputs
from dicom_transfer.report import RunReports, absolute
from dicom_transfer.transforms import ExpandPatterns, RouteToLayout, WriteInstances, WriteReports
from dicom_transfer.transforms.concurrency import DEFAULT_THREADS
from dicom_transfer.transforms.copy_files import CopyFiles
from dicom_transfer.transforms.deidentify import WriteMapping
from dicom_transfer.transforms.deidentify_files import DeidentifyFiles
from dicom_transfer.transforms.manifest import SkipUnchanged
from dicom_transfer.transforms.results import Copied, Listed, QuickChecked, Routed, Transferred, Written


@dataclasses.dataclass(frozen=True)
class CopyConfig:
    """Everything a copy run needs, already checked (see ``pipelines.cli``)."""

    patterns: tuple[str, ...]
    destination: str
    layout: Layout
    reports: RunReports
    filter_file: str | None = None
    overwrite: bool = False
    io_threads: int = 0  # 0: decide from where the bytes are
    strict: bool = False
    deid: DeidConfig | None = None
    # an earlier run's manifest (or a pattern: the newest match) whose successes are not read again
    previous_manifest: str | None = None

    @property
    def dry_run(self) -> bool:
        return self.reports.dry_run

    @property
    def threads(self) -> int:
        if self.io_threads > 0:
            return self.io_threads
        local = all(scheme_of(url) is None for url in (*self.patterns, self.destination))
        return 1 if local else DEFAULT_THREADS


    @property
    def run(self) -> str:
        """What the outputs of this run record as the run that wrote them."""
        return f"{self.reports.operation_id}@{self.reports.created_time}"

    def skip_unchanged(self) -> SkipUnchanged | None:
        """What counts the files an earlier run moved, unchanged since, without reading them.

        Not with de-identification (an output is not its source's bytes) nor a filter file (which
        decides by the UIDs read from each file, and reports the lines that selected nothing).
        """
        if not self.previous_manifest or self.deid or self.filter_file:
            return None
        return SkipUnchanged(self.previous_manifest, self.destination, exclude=self.reports.manifest_url)

    @property
    def streams(self) -> bool:
        """Local destination, no de-identification: each file is copied in one step."""
        return self.deid is None and scheme_of(self.destination) is None

    @property
    def deidentifies_in_one_step(self) -> bool:
        """De-identification to local disk without a filter file: each file in one step."""
        return self.deid is not None and scheme_of(self.destination) is None and not self.filter_file


def build_copy_pipeline(pipeline: beam.Pipeline, config: CopyConfig) -> beam.PCollection:
    """Add the copy stages to ``pipeline``; return the PCollection of the summary URL."""
    if config.streams:
        return _build_streaming(pipeline, config)
    if config.deidentifies_in_one_step:
        return _build_deidentifying(pipeline, config)
    inputs = read_inputs(pipeline, config.patterns, config.filter_file, config.layout.keywords,
                         threads=config.threads, strict=config.strict, exclude=[absolute(config.destination)],
                         skip=config.skip_unchanged())
    instances, extra = inputs.instances, {}
    if config.deid:
        instances, more_failures, more_outcomes = deidentify_stage(
            instances, config.deid, staging_url(config.destination, config.reports.operation_id),
            config.layout.keywords, config.threads)
        inputs.failures += more_failures
        inputs.outcomes += more_outcomes
        extra["deidentification"] = config.deid.summary()
    routed: Routed = instances | "RouteToLayout" >> RouteToLayout(config.layout)
    written: Written = routed.routed | "WriteInstances" >> WriteInstances(
        config.destination, overwrite=config.overwrite, dry_run=config.dry_run, threads=config.threads,
        run=config.run)
    failures = (*inputs.failures, routed.failures, written.failures) | "AllFailures" >> beam.Flatten()
    outcomes = (written.outcomes, *inputs.outcomes) | "AllOutcomes" >> beam.Flatten()
    return (failures, outcomes, inputs.unmatched, inputs.file_counts) | "WriteReports" >> _reports(config, extra)


def _build_streaming(pipeline: beam.Pipeline, config: CopyConfig) -> beam.PCollection:
    """Expansion, then one step per file (:class:`CopyFiles`), then the reports."""
    expanded: Listed = pipeline | "ExpandPatterns" >> ExpandPatterns(
        config.patterns, strict=config.strict, exclude=[absolute(config.destination)])
    files, skipped = expanded.files, None
    skip = config.skip_unchanged()
    if skip is not None:
        checked: QuickChecked = files | "SkipUnchanged" >> skip
        files, skipped = checked.files, checked.outcomes
    copied: Copied = files | "CopyFiles" >> CopyFiles(
        config.destination, config.layout, run=config.run, filter_file=config.filter_file, strict=config.strict,
        overwrite=config.overwrite, dry_run=config.dry_run, threads=config.threads)
    failures = (expanded.failures, copied.failures) | "AllFailures" >> beam.Flatten()
    unmatched = expanded.unmatched
    if copied.unmatched is not None:
        unmatched = (unmatched, copied.unmatched) | "AllUnmatched" >> beam.Flatten()
    outcomes = copied.outcomes
    if skipped is not None:
        outcomes = (outcomes, skipped) | "AllOutcomes" >> beam.Flatten()
    return (failures, outcomes, unmatched, expanded.file_counts) | "WriteReports" >> _reports(config, {})


def _build_deidentifying(pipeline: beam.Pipeline, config: CopyConfig) -> beam.PCollection:
    """Expansion, then one step per file (:class:`DeidentifyFiles`), the mapping table and the reports."""
    deid = config.deid
    assert deid is not None
    expanded: Listed = pipeline | "ExpandPatterns" >> ExpandPatterns(
        config.patterns, strict=config.strict, exclude=[absolute(config.destination)])
    done: Transferred = expanded.files | "DeidentifyFiles" >> DeidentifyFiles(
        deid.settings, config.destination, staging_url(config.destination, config.reports.operation_id),
        config.layout, run=config.run, overwrite=config.overwrite, dry_run=config.dry_run, threads=config.threads,
        mapping=bool(deid.mapping_url))
    if deid.mapping_url:
        done.mapping | "WriteMapping" >> WriteMapping(deid.mapping_url)
    failures = (expanded.failures, done.failures) | "AllFailures" >> beam.Flatten()
    return ((failures, done.outcomes, expanded.unmatched, expanded.file_counts)
            | "WriteReports" >> _reports(config, {"deidentification": deid.summary()}))


def _reports(config: CopyConfig, extra: dict) -> WriteReports:
    return WriteReports.for_run(
        config.reports,
        extra={"source": [redact(p) for p in config.patterns],
               "destination": absolute(redact(config.destination)), **extra},
        check=LayoutCheck(config.destination, config.layout),
    )
