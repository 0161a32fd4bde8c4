"""``export`` from a PACS and ``import`` into one, over DIMSE: checked configurations and pipelines.

The pipelines are the DICOMweb ones with the DIMSE stages in place of QIDO-RS/WADO-RS
(:mod:`dicom_transfer.transforms.dimse_source`) and of STOW-RS
(:mod:`dicom_transfer.transforms.dimse_store`); inputs, layouts, writing and reports are shared.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from collections.abc import Iterator

import apache_beam as beam

from dicom_transfer.dimse import (
    PeerAddress,
    check_ae_title,
    date_chunks,
    parse_date_range,
    parse_listen_address,
    parse_peer_address,
)
from dicom_transfer.errors import redact
from dicom_transfer.io.dimse import DimseError, DimseSettings, echo
from dicom_transfer.io.holdings import LayoutCheck
from dicom_transfer.layout import Layout
from dicom_transfer.pipelines.configs import (
    IMPORT_REPORTS,
    check_filter_file,
    check_schemes,
    check_selection_files,
    collect_patterns,
    output_layout,
    require_report_locations,
    run_reports,
)
from dicom_transfer.pipelines.deid import DeidConfig, deid_config
from dicom_transfer.pipelines.inputs import read_inputs
from dicom_transfer.pipelines.options import UsageError
from dicom_transfer.pipelines.receiver import MoveReceiver, journal_of
from dicom_transfer.report import RunReports
from dicom_transfer.transforms import WriteReports
from dicom_transfer.transforms.deidentify import WriteMapping
from dicom_transfer.transforms.dimse_source import (
    DimseExpandToInstances,
    DimseResourcesToExport,
    DimseRetrieveAndWrite,
)
from dicom_transfer.transforms.dimse_store import DimseStoreInstances
from dicom_transfer.transforms.manifest import TargetCheck
from dicom_transfer.transforms.migrate_targets import PacsTarget
from dicom_transfer.transforms.results import Found, Resources, Transferred, Written


@dataclasses.dataclass(frozen=True)
class MoveSettings:
    """C-MOVE: the destination AE title, where this run's receiver listens (``None``: a
    receiver runs elsewhere), and the journal it writes."""

    ae_title: str
    listen: tuple[str, int] | None
    journal: str


@dataclasses.dataclass(frozen=True)
class DimseExportConfig:
    """Everything an export from a PACS needs, already checked."""

    settings: DimseSettings
    destination: str
    layout: Layout
    reports: RunReports
    identifiers: tuple[str, ...] = ()
    identifiers_file: str | None = None
    filter_file: str | None = None
    date_chunks: tuple[str, ...] | None = None  # study-level C-FIND per chunk; ("",) = every study
    move: MoveSettings | None = None
    overwrite: bool = False
    deid: DeidConfig | None = None

    @property
    def dry_run(self) -> bool:
        return self.reports.dry_run


@dataclasses.dataclass(frozen=True)
class DimseImportConfig:
    """Everything an import into a PACS needs, already checked."""

    patterns: tuple[str, ...]
    settings: DimseSettings
    reports: RunReports
    filter_file: str | None = None
    check_existing: bool = True
    strict: bool = False

    @property
    def dry_run(self) -> bool:
        return self.reports.dry_run


def dimse_settings(options: argparse.Namespace, address: str, option: str) -> DimseSettings:
    """Checked settings for a peer, answered by a C-ECHO; raises UsageError (exit 2)."""
    try:
        peer: PeerAddress = parse_peer_address(address)
        calling = check_ae_title(options.calling_ae, "--calling-ae")
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from exc
    settings = DimseSettings(peer, calling, timeout=options.dimse_timeout,
                             max_associations=options.max_associations)
    try:
        echo(settings)
    except DimseError as exc:
        raise UsageError(f"C-ECHO failed: {exc}") from exc
    return settings


def move_options(options: argparse.Namespace, elsewhere_flag: str, elsewhere: str | None,
                 elsewhere_what: str) -> tuple[str, tuple[str, int] | None] | None:
    """The checked C-MOVE options shared by export and migrate: ``(--move-destination AE title,
    --move-listen address or None)``, or ``None`` without ``--move-destination``. ``elsewhere`` is the
    value of ``elsewhere_flag`` (``--move-journal``, ``--move-staging``: where a receiver that runs
    elsewhere leaves what it receives, ``elsewhere_what``), needed when there is no ``--move-listen``.
    Raises UsageError."""
    if not options.move_destination:
        if options.move_listen or elsewhere:
            raise UsageError(f"--move-listen and {elsewhere_flag} go with --move-destination")
        return None
    try:
        title = check_ae_title(options.move_destination, "--move-destination")
        listen = parse_listen_address(options.move_listen) if options.move_listen else None
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if listen is None and not elsewhere:
        raise UsageError("--move-destination needs --move-listen HOST:PORT (a receiver for this run) or "
                         f"{elsewhere_flag} URL ({elsewhere_what})")
    return title, listen


def _move_settings(options: argparse.Namespace, destination: str) -> MoveSettings | None:
    receiver = move_options(options, "--move-journal", options.move_journal,
                            "the journal of a receiver that runs elsewhere")
    if receiver is None:
        return None
    return MoveSettings(*receiver, options.move_journal or journal_of(destination))


def study_date_chunks(options: argparse.Namespace) -> tuple[str, ...] | None:
    """The study-level C-FIND date chunks of ``--all [--study-date]`` (``("",)``: every study;
    ``None``: not ``--all``); raises UsageError."""
    if options.study_date:
        if not options.export_all:
            raise UsageError("--study-date selects studies by date: use it with --all")
        try:
            return tuple(date_chunks(*parse_date_range(options.study_date), options.date_chunk_days))
        except ValueError as exc:
            raise UsageError(f"--study-date: {exc}") from exc
    return ("",) if options.export_all else None  # one study-level C-FIND for the whole archive


def dimse_export_config(options: argparse.Namespace) -> DimseExportConfig:
    """Check the options of an export from a PACS; raises UsageError."""
    if options.dicomweb_url:
        raise UsageError("give --dicomweb-url or --dimse-source, not both")
    deid = deid_config(options)  # a missing key stops the run before the PACS is asked anything
    if deid and options.move_destination:  # the receiver, outside the pipeline, would write identifiable data
        raise UsageError("--deidentify with --dimse-source retrieves by C-GET: drop --move-destination "
                         "(or export by C-MOVE to a folder, then copy it with --deidentify basic)")
    chunks = study_date_chunks(options)
    check_schemes(options)
    check_selection_files(options.identifiers_file, options.filter_file, options.identifier)
    destination = options.output.rstrip("/") or options.output
    move = _move_settings(options, destination)
    settings = dimse_settings(options, options.dimse_source, "--dimse-source")
    reports, layout = output_layout("export", options)
    return DimseExportConfig(
        settings=settings, destination=destination, layout=layout, reports=reports,
        identifiers=tuple(options.identifier or ()), identifiers_file=options.identifiers_file,
        filter_file=options.filter_file, date_chunks=chunks, move=move, overwrite=options.overwrite, deid=deid)


def dimse_import_config(options: argparse.Namespace, local: bool = True) -> DimseImportConfig:
    """Check the options of an import into a PACS; raises UsageError.

    ``local``: the runner runs here (a distributed one needs explicit report locations).
    """
    require_report_locations(options, local)
    check_schemes(options)
    if options.dicomweb_url:
        raise UsageError("give --dicomweb-url or --dimse-destination, not both")
    patterns = collect_patterns(options.input, options.input_list)
    check_filter_file(options.filter_file)
    settings = dimse_settings(options, options.dimse_destination, "--dimse-destination")
    reports = run_reports("import", options, IMPORT_REPORTS, layout_name="azure", dry_run=options.dry_run)
    return DimseImportConfig(patterns=tuple(patterns), settings=settings, reports=reports,
                             filter_file=options.filter_file, check_existing=options.check_existing,
                             strict=options.strict)


@contextlib.contextmanager
def move_receiver(config: DimseExportConfig) -> Iterator[MoveReceiver | None]:
    """The run's own C-MOVE receiver, listening while the pipeline runs (DirectRunner)."""
    move = config.move
    if move is None or move.listen is None:
        yield None
        return
    receiver = MoveReceiver(move.ae_title, *move.listen, config.destination, config.layout, move.journal,
                            config.overwrite, config.dry_run).start()
    try:
        yield receiver
    finally:
        receiver.stop()


def build_dimse_export_pipeline(pipeline: beam.Pipeline, config: DimseExportConfig) -> beam.PCollection:
    """Add the stages of an export from a PACS to ``pipeline``; return the summary URL's PCollection."""
    settings = config.settings
    resources: Resources = pipeline | "ResourcesToExport" >> DimseResourcesToExport(
        settings, config.identifiers, config.identifiers_file, config.filter_file, config.date_chunks)
    series: Found = resources.resources | "ExpandToInstances" >> DimseExpandToInstances(settings)
    move = config.move
    exported: Transferred = series.instances | "RetrieveAndWrite" >> DimseRetrieveAndWrite(
        settings, config.destination, config.layout, config.overwrite, config.dry_run,
        move.ae_title if move else None, move.journal if move else None,
        deid=config.deid.settings if config.deid else None)
    extra = {}
    if config.deid:
        extra["deidentification"] = config.deid.summary()
        if config.deid.mapping_url:
            exported.mapping | "WriteMapping" >> WriteMapping(config.deid.mapping_url)
    failures = (resources.failures, series.failures, exported.failures) | "AllFailures" >> beam.Flatten()
    no_patterns = pipeline | "NoPatterns" >> beam.Create([])
    return (failures, exported.outcomes, no_patterns) | "WriteReports" >> WriteReports.for_run(
        config.reports, extra={"source": str(settings.peer), "destination": redact(config.destination),
                               "retrieval": f"C-MOVE to {move.ae_title}" if move else "C-GET", **extra},
        check=LayoutCheck(config.destination, config.layout))


def build_dimse_import_pipeline(pipeline: beam.Pipeline, config: DimseImportConfig) -> beam.PCollection:
    """Add the stages of an import into a PACS to ``pipeline``; return the summary URL's PCollection."""
    inputs = read_inputs(pipeline, config.patterns, config.filter_file, strict=config.strict)
    stored: Written = inputs.instances | "StoreInstances" >> DimseStoreInstances(
        config.settings, check_existing=config.check_existing, dry_run=config.dry_run)
    failures = (*inputs.failures, stored.failures) | "AllFailures" >> beam.Flatten()
    outcomes = (stored.outcomes, *inputs.outcomes) | "AllOutcomes" >> beam.Flatten()
    return (failures, outcomes, inputs.unmatched) | "WriteReports" >> WriteReports.for_run(
        config.reports, extra={"source": [redact(p) for p in config.patterns],
                               "destination": str(config.settings.peer)},
        check=TargetCheck(PacsTarget(config.settings)))
