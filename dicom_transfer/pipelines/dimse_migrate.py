"""``migrate --dimse-source``: a PACS to a DICOMweb server in one run.

The selection is the DIMSE export's (identifiers, identifier or filter files, or
``--all [--study-date]`` by study-level C-FIND in date chunks, expanded with C-FIND);
the per-series migration is ``migrate``'s, with C-GET (or C-MOVE to a receiver that stages
what it receives) in place of WADO-RS
(:class:`~dicom_transfer.transforms.dimse_migrate.DimseMigrateSeries`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import shutil
import tempfile
from collections.abc import Iterator

import apache_beam as beam

from dicom_transfer.errors import redact
from dicom_transfer.io.dicomweb import DicomwebClient
from dicom_transfer.io.dimse import DimseSettings
from dicom_transfer.layout import Layout
from dicom_transfer.pipelines.configs import (
    IMPORT_REPORTS,
    check_schemes,
    check_selection_files,
    migrate_destination,
    require_report_locations,
    run_reports,
)
from dicom_transfer.pipelines.deid import DeidConfig, deid_config
from dicom_transfer.pipelines.dimse import dimse_settings, move_options, study_date_chunks
from dicom_transfer.pipelines.options import UsageError
from dicom_transfer.pipelines.receiver import MoveReceiver, journal_of
from dicom_transfer.report import RunReports
from dicom_transfer.transforms import WriteReports
from dicom_transfer.transforms.deidentify import WriteMapping
from dicom_transfer.transforms.dimse_migrate import DimseMigrateSeries
from dicom_transfer.transforms.dimse_source import DimseExpandToInstances, DimseResourcesToExport
from dicom_transfer.transforms.manifest import TargetCheck
from dicom_transfer.transforms.migrate_targets import migration_target
from dicom_transfer.transforms.results import Found, Resources, Transferred


@dataclasses.dataclass(frozen=True)
class StagedMove:
    """C-MOVE for a migration: the destination AE title, where this run's receiver listens
    (``None``: a receiver runs elsewhere), and the staging area it writes into (a temporary
    folder of this run's when ``temporary``)."""

    ae_title: str
    listen: tuple[str, int] | None
    staging: str
    temporary: bool = False

    @property
    def journal(self) -> str:
        return journal_of(self.staging)


def staged_move(options: argparse.Namespace) -> StagedMove | None:
    """The C-MOVE options of a migration; raises UsageError."""
    receiver = move_options(options, "--move-staging", options.move_staging,
                            "the staging area of a receiver that runs elsewhere")
    if receiver is None:
        return None
    title, listen = receiver
    if options.move_staging:
        return StagedMove(title, listen, options.move_staging.rstrip("/"))
    return StagedMove(title, listen, tempfile.mkdtemp(prefix="dicom-transfer-staging-"), temporary=True)


@dataclasses.dataclass(frozen=True)
class DimseMigrateConfig:
    """Everything a migration from a PACS needs, already checked."""

    settings: DimseSettings
    destination: DicomwebClient | DimseSettings  # a PACS: --dimse-destination
    reports: RunReports
    identifiers: tuple[str, ...] = ()
    identifiers_file: str | None = None
    filter_file: str | None = None
    date_chunks: tuple[str, ...] | None = None  # study-level C-FIND per chunk; ("",) = every study
    max_instances: int = 32
    max_bytes: int = 32 << 20
    concurrency: int = 4
    verify_bytes: bool = False
    move: StagedMove | None = None
    deid: DeidConfig | None = None

    @property
    def dry_run(self) -> bool:
        return self.reports.dry_run

    @property
    def destination_name(self) -> str:
        return migration_target(self.destination).name


def dimse_migrate_config(options: argparse.Namespace, local: bool = True) -> DimseMigrateConfig:
    """Check the options of a migration from a PACS, C-ECHO the PACS and check the destination;
    raises UsageError (exit 2)."""
    if options.source_dicomweb_url:
        raise UsageError("give --source-dicomweb-url or --dimse-source, not both")
    require_report_locations(options, local, "migrate")
    deid = deid_config(options)  # a missing key stops the run before the PACS is asked anything
    if deid and options.move_destination:  # the receiver, outside the pipeline, would stage identifiable data
        raise UsageError("--deidentify with --dimse-source retrieves by C-GET: drop --move-destination")
    chunks = study_date_chunks(options)
    check_schemes(options)
    move = staged_move(options)
    check_selection_files(options.identifiers_file, options.filter_file, options.identifier)
    settings = dimse_settings(options, options.dimse_source, "--dimse-source")
    destination = migrate_destination(options)
    if isinstance(destination, DimseSettings) and destination.peer == settings.peer:
        raise UsageError("--dimse-source and --dimse-destination name the same PACS")
    reports = run_reports("migrate", options, IMPORT_REPORTS, layout_name="azure", dry_run=options.dry_run)
    return DimseMigrateConfig(
        settings=settings, destination=destination, reports=reports,
        identifiers=tuple(options.identifier or ()), identifiers_file=options.identifiers_file,
        filter_file=options.filter_file, date_chunks=chunks,
        max_instances=options.max_instances_per_request, max_bytes=options.max_request_bytes,
        concurrency=options.concurrency, verify_bytes=options.verify_bytes, move=move, deid=deid)


@contextlib.contextmanager
def staging_receiver(config: DimseMigrateConfig) -> Iterator[MoveReceiver | None]:
    """The run's own C-MOVE receiver (DirectRunner), staging what it receives, while the
    pipeline runs; a temporary staging folder is removed afterwards."""
    move = config.move
    receiver = None
    if move is not None and move.listen is not None:
        receiver = MoveReceiver(move.ae_title, *move.listen, move.staging, Layout.parse("uid"), move.journal,
                                overwrite=True).start()
    try:
        yield receiver
    finally:
        if receiver is not None:
            receiver.stop()
        if move is not None and move.temporary:
            shutil.rmtree(move.staging, ignore_errors=True)


def build_dimse_migrate_pipeline(pipeline: beam.Pipeline, config: DimseMigrateConfig) -> beam.PCollection:
    """Add the stages of a migration from a PACS to ``pipeline``; return the summary URL's PCollection."""
    settings = config.settings
    resources: Resources = pipeline | "ResourcesToExport" >> DimseResourcesToExport(
        settings, config.identifiers, config.identifiers_file, config.filter_file, config.date_chunks)
    series: Found = resources.resources | "ExpandToInstances" >> DimseExpandToInstances(settings)
    migrated: Transferred = series.instances | "MigrateSeries" >> DimseMigrateSeries(
        settings, config.destination, max_instances=config.max_instances, max_bytes=config.max_bytes,
        concurrency=config.concurrency, verify_bytes=config.verify_bytes, dry_run=config.dry_run,
        move_destination=config.move.ae_title if config.move else None,
        journal=config.move.journal if config.move else None,
        deid=config.deid.settings if config.deid else None)
    extra = {}
    if config.deid:
        extra["deidentification"] = config.deid.summary()
        if config.deid.mapping_url:  # a re-run moves only what is missing: earlier rows are kept
            migrated.mapping | "WriteMapping" >> WriteMapping(config.deid.mapping_url, merge_existing=True)
    failures = (resources.failures, series.failures, migrated.failures) | "AllFailures" >> beam.Flatten()
    no_patterns = pipeline | "NoPatterns" >> beam.Create([])
    return (failures, migrated.outcomes, no_patterns) | "WriteReports" >> WriteReports.for_run(
        config.reports,
        extra={"source": str(settings.peer), "destination": config.destination_name,
               "retrieval": f"C-MOVE to {config.move.ae_title}" if config.move else "C-GET",
               **({"staging": redact(config.move.staging)} if config.move and not config.move.temporary else {}),
               "verifyBytes": config.verify_bytes, **extra},
        check=TargetCheck(migration_target(config.destination)),
    )
