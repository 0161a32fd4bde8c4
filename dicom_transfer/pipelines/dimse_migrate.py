"""``migrate --dimse-source``: a PACS to a DICOMweb server in one run.

The selection is the DIMSE export's (identifiers, identifier or filter files, or
``--all [--study-date]`` by study-level C-FIND in date chunks, expanded with C-FIND);
the per-series migration is ``migrate``'s, with C-GET in place of WADO-RS
(:class:`~dicom_transfer.transforms.dimse_migrate.DimseMigrateSeries`).
"""

from __future__ import annotations

import argparse
import dataclasses

import apache_beam as beam

from dicom_transfer.errors import FAILURES
from dicom_transfer.io.dicomweb import DicomwebClient
from dicom_transfer.io.dimse import DimseSettings
from dicom_transfer.pipelines.configs import (
    IMPORT_REPORTS,
    check_schemes,
    check_selection_files,
    dicomweb_client,
    require_report_locations,
    run_reports,
)
from dicom_transfer.pipelines.dimse import dimse_settings, study_date_chunks
from dicom_transfer.pipelines.options import UsageError
from dicom_transfer.report import RunReports
from dicom_transfer.transforms import WriteReports
from dicom_transfer.transforms.dimse_migrate import DimseMigrateSeries
from dicom_transfer.transforms.dimse_source import INSTANCES, DimseExpandToInstances, DimseResourcesToExport
from dicom_transfer.transforms.outcomes import OUTCOMES
from dicom_transfer.transforms.retrieve import RESOURCES


@dataclasses.dataclass(frozen=True)
class DimseMigrateConfig:
    """Everything a migration from a PACS needs, already checked."""

    settings: DimseSettings
    destination: DicomwebClient
    reports: RunReports
    identifiers: tuple[str, ...] = ()
    identifiers_file: str | None = None
    filter_file: str | None = None
    date_chunks: tuple[str, ...] | None = None  # study-level C-FIND per chunk; ("",) = every study
    max_instances: int = 32
    max_bytes: int = 32 << 20
    concurrency: int = 4
    verify_bytes: bool = False

    @property
    def dry_run(self) -> bool:
        return self.reports.dry_run


def dimse_migrate_config(options: argparse.Namespace, local: bool = True) -> DimseMigrateConfig:
    """Check the options of a migration from a PACS, C-ECHO the PACS and check the destination;
    raises UsageError (exit 2)."""
    if options.source_dicomweb_url:
        raise UsageError("give --source-dicomweb-url or --dimse-source, not both")
    require_report_locations(options, local, "migrate")
    chunks = study_date_chunks(options)
    check_schemes(options)
    check_selection_files(options.identifiers_file, options.filter_file, options.identifier)
    settings = dimse_settings(options, options.dimse_source, "--dimse-source")
    destination = dicomweb_client(options)
    reports = run_reports("migrate", options, IMPORT_REPORTS, layout_name="azure", dry_run=options.dry_run)
    return DimseMigrateConfig(
        settings=settings, destination=destination, reports=reports,
        identifiers=tuple(options.identifier or ()), identifiers_file=options.identifiers_file,
        filter_file=options.filter_file, date_chunks=chunks,
        max_instances=options.max_instances_per_request, max_bytes=options.max_request_bytes,
        concurrency=options.concurrency, verify_bytes=options.verify_bytes)


def build_dimse_migrate_pipeline(pipeline: beam.Pipeline, config: DimseMigrateConfig) -> beam.PCollection:
    """Add the stages of a migration from a PACS to ``pipeline``; return the summary URL's PCollection."""
    settings = config.settings
    resources = pipeline | "ResourcesToExport" >> DimseResourcesToExport(
        settings, config.identifiers, config.identifiers_file, config.filter_file, config.date_chunks)
    series = resources[RESOURCES] | "ExpandToInstances" >> DimseExpandToInstances(settings)
    migrated = series[INSTANCES] | "MigrateSeries" >> DimseMigrateSeries(
        settings, config.destination, max_instances=config.max_instances, max_bytes=config.max_bytes,
        concurrency=config.concurrency, verify_bytes=config.verify_bytes, dry_run=config.dry_run)
    failures = (resources[FAILURES], series[FAILURES], migrated[FAILURES]) | "AllFailures" >> beam.Flatten()
    no_patterns = pipeline | "NoPatterns" >> beam.Create([])
    return (failures, migrated[OUTCOMES], no_patterns) | "WriteReports" >> WriteReports.for_run(
        config.reports,
        extra={"source": str(settings.peer), "destination": config.destination.safe_url,
               "retrieval": "C-GET", "verifyBytes": config.verify_bytes},
    )
