"""The ``copy`` pipeline: storage to storage, re-organised per UID."""

from __future__ import annotations

import apache_beam as beam

from dicom_transfer.io.holdings import LayoutCheck
from dicom_transfer.pipelines.copy_config import CopyConfig
from dicom_transfer.pipelines.deid import deidentify_stage, staging_url
from dicom_transfer.pipelines.inputs import read_inputs
from dicom_transfer.report import absolute
from dicom_transfer.transforms import ExpandPatterns, RouteToLayout, WriteInstances, WriteReports
from dicom_transfer.transforms.copy_files import CopyFiles
from dicom_transfer.transforms.results import Copied, Listed, QuickChecked, Routed, Transferred, Written

__all__ = ["CopyConfig", "build_copy_pipeline"]  # CopyConfig: see pipelines.copy_config


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
        config.patterns, strict=config.strict, exclude=[absolute(config.destination)],
        spread=not config.in_one_process)
    files, skipped = expanded.files, None
    skip = config.skip_unchanged()
    if skip is not None:
        checked: QuickChecked = files | "SkipUnchanged" >> skip
        files, skipped = checked.files, checked.outcomes
    copied: Copied = files | "CopyFiles" >> CopyFiles(
        config.destination, config.layout, run=config.run, filter_file=config.filter_file, strict=config.strict,
        overwrite=config.overwrite, dry_run=config.dry_run, threads=config.threads, processes=config.processes)
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
    # here, not above: a copy that does not de-identify does not import pydicom (~0.3 s)
    from dicom_transfer.transforms.deidentify import WriteMapping
    from dicom_transfer.transforms.deidentify_files import DeidentifyFiles

    deid = config.deid
    assert deid is not None
    expanded: Listed = pipeline | "ExpandPatterns" >> ExpandPatterns(
        config.patterns, strict=config.strict, exclude=[absolute(config.destination)],
        spread=not config.in_one_process)
    done: Transferred = expanded.files | "DeidentifyFiles" >> DeidentifyFiles(
        deid.settings, config.destination, staging_url(config.destination, config.reports.operation_id),
        config.layout, run=config.run, overwrite=config.overwrite, dry_run=config.dry_run, threads=config.threads,
        mapping=bool(deid.mapping_url), processes=config.processes)
    if deid.mapping_url:
        done.mapping | "WriteMapping" >> WriteMapping(deid.mapping_url)
    failures = (expanded.failures, done.failures) | "AllFailures" >> beam.Flatten()
    return ((failures, done.outcomes, expanded.unmatched, expanded.file_counts)
            | "WriteReports" >> _reports(config, {"deidentification": deid.summary()}))


def _reports(config: CopyConfig, extra: dict) -> WriteReports:
    return WriteReports.for_run(config.reports, extra={**config.summary_extra(), **extra},
                                check=LayoutCheck(config.destination, config.layout))
