"""The ``migrate`` pipeline: a DICOMweb server to another one or to a PACS (C-STORE), by
identifiers, filter file or all."""

from __future__ import annotations

import dataclasses

import apache_beam as beam

from dicom_transfer.io.dicomweb import DicomwebClient
from dicom_transfer.io.dimse import DimseSettings
from dicom_transfer.pipelines.deid import DeidConfig
from dicom_transfer.pipelines.export_pipeline import selected_series
from dicom_transfer.report import RunReports
from dicom_transfer.transforms import WriteReports
from dicom_transfer.transforms.deidentify import WriteMapping
from dicom_transfer.transforms.manifest import TargetCheck
from dicom_transfer.transforms.migrate import MigrateSeries
from dicom_transfer.transforms.migrate_targets import migration_target
from dicom_transfer.transforms.results import Transferred


@dataclasses.dataclass(frozen=True)
class MigrateConfig:
    """Everything a migrate run needs, already checked (see ``pipelines.configs``)."""

    source: DicomwebClient
    destination: DicomwebClient | DimseSettings  # a PACS: --dimse-destination
    reports: RunReports
    identifiers: tuple[str, ...] = ()
    identifiers_file: str | None = None
    filter_file: str | None = None
    all_studies: bool = False
    max_instances: int = 32
    max_bytes: int = 32 << 20
    concurrency: int = 4
    verify_bytes: bool = False
    deid: DeidConfig | None = None

    @property
    def dry_run(self) -> bool:
        return self.reports.dry_run

    @property
    def destination_name(self) -> str:
        return migration_target(self.destination).name


def build_migrate_pipeline(pipeline: beam.Pipeline, config: MigrateConfig) -> beam.PCollection:
    """Add the migrate stages to ``pipeline``; return the PCollection of the summary URL."""
    series, selection_failures = selected_series(pipeline, config.source, config)
    migrated: Transferred = series | "MigrateSeries" >> MigrateSeries(
        config.source, config.destination, max_instances=config.max_instances, max_bytes=config.max_bytes,
        concurrency=config.concurrency, verify_bytes=config.verify_bytes, dry_run=config.dry_run,
        deid=config.deid.settings if config.deid else None)
    extra = {}
    if config.deid:
        extra["deidentification"] = config.deid.summary()
        if config.deid.mapping_url:  # a re-run moves only what is missing: earlier rows are kept
            migrated.mapping | "WriteMapping" >> WriteMapping(config.deid.mapping_url, merge_existing=True)
    failures = (*selection_failures, migrated.failures) | "AllFailures" >> beam.Flatten()
    no_patterns = pipeline | "NoPatterns" >> beam.Create([])
    return (failures, migrated.outcomes, no_patterns) | "WriteReports" >> WriteReports.for_run(
        config.reports,
        extra={"source": config.source.safe_url, "destination": config.destination_name,
               "verifyBytes": config.verify_bytes, **extra},
        check=TargetCheck(migration_target(config.destination)),
    )
