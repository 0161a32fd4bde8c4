"""The ``import`` pipeline: files to a DICOMweb server (STOW-RS)."""

from __future__ import annotations

import dataclasses

import apache_beam as beam

from dicom_transfer.errors import redact
from dicom_transfer.io.dicomweb import DicomwebClient
from dicom_transfer.pipelines.inputs import read_inputs
from dicom_transfer.report import RunReports
from dicom_transfer.transforms import WriteReports
from dicom_transfer.transforms.manifest import DicomwebCheck
from dicom_transfer.transforms.results import Written
from dicom_transfer.transforms.store import StoreInstances


@dataclasses.dataclass(frozen=True)
class ImportConfig:
    """Everything an import run needs, already checked (see ``pipelines.cli``)."""

    patterns: tuple[str, ...]
    client: DicomwebClient
    reports: RunReports
    filter_file: str | None = None
    max_instances: int = 32
    max_bytes: int = 32 << 20
    concurrency: int = 4
    check_existing: bool = True
    strict: bool = False
    in_one_process: bool = False  # the runner executes the pipeline in this process: no grouping

    @property
    def dry_run(self) -> bool:
        return self.reports.dry_run


def build_import_pipeline(pipeline: beam.Pipeline, config: ImportConfig) -> beam.PCollection:
    """Add the import stages to ``pipeline``; return the PCollection of the summary URL."""
    inputs = read_inputs(pipeline, config.patterns, config.filter_file, strict=config.strict,
                         spread=not config.in_one_process)
    stored: Written = inputs.instances | "StoreInstances" >> StoreInstances(
        config.client, max_instances=config.max_instances, max_bytes=config.max_bytes,
        concurrency=config.concurrency, check_existing=config.check_existing,
        dry_run=config.dry_run, answer_series=True, in_one_process=config.in_one_process)
    failures = (*inputs.failures, stored.failures) | "AllFailures" >> beam.Flatten()
    outcomes = (stored.outcomes, *inputs.outcomes) | "AllOutcomes" >> beam.Flatten()
    return (failures, outcomes, inputs.unmatched, inputs.file_counts) | "WriteReports" >> WriteReports.for_run(
        config.reports,
        extra={"source": [redact(p) for p in config.patterns], "destination": config.client.safe_url},
        check=DicomwebCheck(config.client), answers=stored.answers,
    )
