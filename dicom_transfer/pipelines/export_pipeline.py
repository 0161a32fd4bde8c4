"""The ``export`` pipeline: a DICOMweb server to storage, by identifiers, filter file or all."""

from __future__ import annotations

import dataclasses

import apache_beam as beam

from dicom_transfer.errors import redact
from dicom_transfer.io.dicomweb import DicomwebClient
from dicom_transfer.io.holdings import LayoutCheck
from dicom_transfer.layout import Layout
from dicom_transfer.pipelines.deid import DeidConfig
from dicom_transfer.report import RunReports, absolute
from dicom_transfer.transforms import WriteReports
from dicom_transfer.transforms.deidentify import WriteMapping
from dicom_transfer.transforms.results import Found, Resources, Transferred
from dicom_transfer.transforms.retrieve import (
    ExpandToInstances,
    ResourcesToExport,
    RetrieveAndWrite,
)


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """Everything an export run needs, already checked (see ``pipelines.cli``)."""

    client: DicomwebClient
    destination: str
    layout: Layout
    reports: RunReports
    identifiers: tuple[str, ...] = ()
    identifiers_file: str | None = None
    filter_file: str | None = None
    all_studies: bool = False
    transfer_syntax: str = "*"
    overwrite: bool = False
    deid: DeidConfig | None = None

    @property
    def dry_run(self) -> bool:
        return self.reports.dry_run


def selected_series(pipeline: beam.Pipeline, client: DicomwebClient, selection) -> tuple[beam.PCollection, tuple]:
    """The instances ``selection`` names on ``client``'s server (its ``identifiers``,
    ``identifiers_file``, ``filter_file`` or ``all_studies``), grouped by series (a fusion break),
    and the failure outputs of resolving them."""
    resources: Resources = pipeline | "ResourcesToExport" >> ResourcesToExport(
        client, selection.identifiers, selection.identifiers_file, selection.filter_file, selection.all_studies)
    series: Found = resources.resources | "ExpandToInstances" >> ExpandToInstances(client)
    return series.instances, (resources.failures, series.failures)


def build_export_pipeline(pipeline: beam.Pipeline, config: ExportConfig) -> beam.PCollection:
    """Add the export stages to ``pipeline``; return the PCollection of the summary URL."""
    series, selection_failures = selected_series(pipeline, config.client, config)
    exported: Transferred = series | "RetrieveAndWrite" >> RetrieveAndWrite(
        config.client, config.destination, config.layout, config.transfer_syntax, config.overwrite,
        config.dry_run, deid=config.deid.settings if config.deid else None)
    extra = {}
    if config.deid:
        extra["deidentification"] = config.deid.summary()
        if config.deid.mapping_url:
            exported.mapping | "WriteMapping" >> WriteMapping(config.deid.mapping_url)
    failures = (*selection_failures, exported.failures) | "AllFailures" >> beam.Flatten()
    no_patterns = pipeline | "NoPatterns" >> beam.Create([])
    return (failures, exported.outcomes, no_patterns) | "WriteReports" >> WriteReports.for_run(
        config.reports,
        extra={"source": config.client.safe_url, "destination": absolute(redact(config.destination)), **extra},
        check=LayoutCheck(config.destination, config.layout),
    )
