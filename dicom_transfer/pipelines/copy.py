"""The ``copy`` pipeline: storage to storage, re-organised per UID."""

from __future__ import annotations

import dataclasses

import apache_beam as beam

from dicom_transfer.errors import FAILURES, redact
from dicom_transfer.layout import Layout
from dicom_transfer.metrics import FILTERED
from dicom_transfer.transforms import (
    ExpandPatterns,
    FilterInstances,
    Outcome,
    ReadAndValidate,
    RouteToLayout,
    WriteInstances,
    WriteReports,
)


@dataclasses.dataclass(frozen=True)
class CopyConfig:
    """Everything a copy run needs, already checked (see ``pipelines.cli``)."""

    patterns: tuple[str, ...]
    destination: str
    layout: Layout
    operation_id: str
    created_time: str
    errors_url: str
    summary_url: str
    filter_file: str | None = None
    overwrite: bool = False
    dry_run: bool = False


def _filtered_outcome(instance) -> Outcome:
    return Outcome(FILTERED, instance.size, instance.url, "")


def build_copy_pipeline(pipeline: beam.Pipeline, config: CopyConfig) -> beam.PCollection:
    """Add the copy stages to ``pipeline``; return the PCollection of the summary URL."""
    expanded = pipeline | "ExpandPatterns" >> ExpandPatterns(config.patterns)
    checked = expanded["files"] | "ReadAndValidate" >> ReadAndValidate(config.layout.keywords)
    instances = checked["instances"]
    outcome_parts = []
    if config.filter_file:
        selected = instances | "FilterInstances" >> FilterInstances(config.filter_file)
        instances = selected["instances"]
        outcome_parts.append(selected[FILTERED] | "FilteredOutcomes" >> beam.Map(_filtered_outcome))
    routed = instances | "RouteToLayout" >> RouteToLayout(config.layout)
    written = routed["routed"] | "WriteInstances" >> WriteInstances(
        config.destination, overwrite=config.overwrite, dry_run=config.dry_run)
    failures = (
        (expanded[FAILURES], checked[FAILURES], routed[FAILURES], written[FAILURES])
        | "AllFailures" >> beam.Flatten()
    )
    outcomes = (written["outcomes"], *outcome_parts) | "AllOutcomes" >> beam.Flatten()
    return (failures, outcomes, expanded["unmatched"]) | "WriteReports" >> WriteReports(
        errors_url=config.errors_url,
        summary_url=config.summary_url,
        operation_id=config.operation_id,
        operation_type="copy",
        created_time=config.created_time,
        dry_run=config.dry_run,
        extra={"source": [redact(p) for p in config.patterns],
               "destination": redact(config.destination)},
    )
