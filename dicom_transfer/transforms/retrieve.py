"""Export from a DICOMweb server: resolve resources to instances (QIDO-RS), then
retrieve them series by series (WADO-RS), validate, and write them to a layout."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Iterator

import apache_beam as beam
import requests
from apache_beam.metrics import Metrics

from dicom_transfer import metrics
from dicom_transfer.deid.rewrite import Deidentifier
from dicom_transfer.dicom_json import SERIES_UID, SOP_UID, STUDY_UID, first_value
from dicom_transfer.elements import OUTCOMES, FileRef, ValidInstance
from dicom_transfer.errors import FAILURES, ErrorRecord, redact
from dicom_transfer.io.destination import Destination
from dicom_transfer.io.dicomweb import DicomwebClient, DicomwebError, TranscodingError, paged
from dicom_transfer.io.files import read_list_file
from dicom_transfer.io.instances import validate_file
from dicom_transfer.io.multipart import MultipartError
from dicom_transfer.layout import Layout
from dicom_transfer.part10 import InvalidInstance
from dicom_transfer.resources import ResourcePath, parse_filter_line, parse_identifier
from dicom_transfer.transforms.deidentify import DEIDENTIFIED, MAPPING, DeidSettings, deidentify_and_place
from dicom_transfer.transforms.dofn import DoFn
from dicom_transfer.transforms.place import Placements, place_instance
from dicom_transfer.transforms.results import Found, Resources, Transferred
from dicom_transfer.vocabulary import Stage

LOG = logging.getLogger(__name__)
RESOURCES = "resources"
INSTANCES = "instances"
__all__ = ["SOP_UID", "first_value", "paged"]  # where migrate found them first


def read_request_lines(url: str) -> Iterator[tuple[str, str]]:
    """``(line, where)`` for each entry of an identifiers or filter file (read on a worker)."""
    return read_list_file(url, errors="replace")


class _ParseFn(DoFn):
    def __init__(self, kind: str) -> None:
        self.kind = kind

    def process(self, element: tuple[str, str]) -> Iterator:
        text, where = element
        try:
            if self.kind == "filter":
                yield parse_filter_line(text, where)
            else:
                yield parse_identifier(text, where)
        except ValueError as exc:
            yield beam.pvalue.TaggedOutput(FAILURES, ErrorRecord.create(text, str(exc), Stage.EXPAND))


class _ClientFn(DoFn):
    """A DoFn that talks to a DICOMweb server; the HTTP session is made per worker."""

    def __init__(self, client: DicomwebClient) -> None:
        self.client_settings = client.settings

    def setup(self) -> None:
        self.client = DicomwebClient(**self.client_settings)


class _ListStudiesFn(_ClientFn):

    def process(self, _: object) -> Iterator:
        try:
            for item in paged(self.client, "/studies", {"includefield": STUDY_UID}):
                study = first_value(item, STUDY_UID)
                if study:
                    yield ResourcePath(study)
        except DicomwebError as exc:
            yield beam.pvalue.TaggedOutput(FAILURES, ErrorRecord.create(
                self.client.safe_url, f"cannot list the studies of the store: {exc}", Stage.EXPAND))


class ResourcesToExport(beam.PTransform):
    """What to export, as :class:`ResourcePath` values.

    One of: Azure identifiers (``study[/series[/sop]]``), Google filter-file lines
    (``/studies/S[/series/SE[/instances/I]]``), or every study of the store
    (``all_studies``, listed with QIDO-RS paging). A malformed identifier or line
    is one failure record; the rest goes on.

    Example::

        resources = p | ResourcesToExport(client, identifiers=["1.2.3", "12.3/4.5.678"])
    """

    def __init__(self, client: DicomwebClient | None, identifiers: Iterable[str] = (),
                 identifiers_file: str | None = None, filter_file: str | None = None,
                 all_studies: bool = False) -> None:
        """``client``: the store listed for ``all_studies`` (``None`` when only given lists are read)."""
        super().__init__()
        if all_studies and client is None:
            raise ValueError("all_studies needs the client of the store to list")
        self.client = client
        self.identifiers = list(identifiers)
        self.identifiers_file = identifiers_file
        self.filter_file = filter_file
        self.all_studies = all_studies

    def expand(self, pbegin: beam.pvalue.PBegin) -> Resources:
        resources, failures = [], []
        if self.identifiers:
            given = (pbegin | "Identifiers" >> beam.Create([(i, "--identifier") for i in self.identifiers])
                     | "ParseIdentifiers" >> beam.ParDo(_ParseFn("identifier")).with_outputs(
                         FAILURES, main=RESOURCES))
            resources.append(given[RESOURCES])
            failures.append(given[FAILURES])
        for kind, url in (("identifier", self.identifiers_file), ("filter", self.filter_file)):
            if url:
                parsed = (pbegin | f"{kind}File" >> beam.Create([url])
                          | f"Read{kind}Lines" >> beam.FlatMap(read_request_lines)
                          | f"Parse{kind}Lines" >> beam.ParDo(_ParseFn(kind)).with_outputs(
                              FAILURES, main=RESOURCES))
                resources.append(parsed[RESOURCES])
                failures.append(parsed[FAILURES])
        if self.all_studies and self.client is not None:
            listed = (pbegin | "Store" >> beam.Create([None])
                      | "ListStudies" >> beam.ParDo(_ListStudiesFn(self.client)).with_outputs(
                          FAILURES, main=RESOURCES))
            resources.append(listed[RESOURCES])
            failures.append(listed[FAILURES])
        return Resources(resources | "AllResources" >> beam.Flatten(pipeline=pbegin.pipeline),
                         failures | "ParseFailures" >> beam.Flatten(pipeline=pbegin.pipeline))


class _ExpandFn(_ClientFn):
    """ResourcePath -> ((study, series), (sop, whole_series)) via QIDO-RS."""

    def process(self, resource: ResourcePath) -> Iterator:
        try:
            found = list(self._instances(resource))
        except DicomwebError as exc:
            if exc.status == 404:
                found = []
            else:
                yield beam.pvalue.TaggedOutput(FAILURES, ErrorRecord.create(
                    resource.identifier, f"cannot resolve {resource.level}: {exc}", Stage.EXPAND))
                return
        if not found:
            yield beam.pvalue.TaggedOutput(FAILURES, ErrorRecord.create(
                resource.identifier, f"{resource.level} not found on the server (it matches no instance)",
                Stage.EXPAND))
            return
        yield from found

    def _instances(self, resource: ResourcePath) -> Iterator:
        if resource.instance is not None:
            yield (resource.study, resource.series), (resource.instance, False)
            return
        series_list: list[str | None]
        if resource.series is not None:
            series_list = [resource.series]
        else:
            series_list = [
                first_value(item, SERIES_UID)
                for item in paged(self.client, f"/studies/{resource.study}/series",
                                  {"includefield": SERIES_UID})
            ]
        for series in filter(None, series_list):
            for item in paged(self.client, f"/studies/{resource.study}/series/{series}/instances",
                              {"includefield": SOP_UID}):
                sop = first_value(item, SOP_UID)
                if sop:
                    yield (resource.study, series), (sop, True)


class ExpandToInstances(beam.PTransform):
    """Resolve studies and series to their instances with paged QIDO-RS queries.

    The output is grouped by series (a ``GroupByKey``, which also breaks fusion so
    that retrieval parallelises): ``((study, series), [(sop, whole_series), ...])``.
    A resource that matches nothing is one failure record.

    Example::

        series = resources | ExpandToInstances(client)
    """

    def __init__(self, client: DicomwebClient) -> None:
        super().__init__()
        self.client = client

    def expand(self, resources: beam.PCollection) -> Found:
        expanded = resources | "Qido" >> beam.ParDo(_ExpandFn(self.client)).with_outputs(
            FAILURES, main=INSTANCES)
        grouped = expanded[INSTANCES] | "GroupBySeries" >> beam.GroupByKey()
        return Found(grouped, expanded[FAILURES])


class _RetrieveFn(_ClientFn):
    def __init__(self, client: DicomwebClient, destination_url: str, layout: Layout,
                 transfer_syntax: str, overwrite: bool, dry_run: bool = False,
                 deid: DeidSettings | None = None) -> None:
        super().__init__(client)
        self.deid = deid
        self.deidentified = Metrics.counter(metrics.NAMESPACE, DEIDENTIFIED)
        self.dry_run = dry_run
        self.destination_url = destination_url
        self.layout = layout
        self.transfer_syntax = transfer_syntax
        self.overwrite = overwrite
        self.placements = Placements(dry_run)

    def setup(self) -> None:
        super().setup()
        self.destination = Destination(self.destination_url)
        self.placements.start("export")
        self.deidentifier = self.deid.deidentifier() if self.deid else None

    def process(self, element: tuple[tuple[str, str], Iterable[tuple[str, bool]]]) -> Iterator:
        (study, series), items = element
        wanted: dict[str, bool] = {}
        for sop, whole in items:
            wanted[sop] = wanted.get(sop, False) or whole
        state = _SeriesState(study, series, wanted)
        if any(wanted.values()):
            try:
                yield from self._retrieve(f"/studies/{study}/series/{series}", state, single=None)
            except TranscodingError as exc:  # the same for each instance: one record each, no more requests
                for sop in sorted(set(wanted) - state.done):
                    yield self._failure(f"{study}/{series}/{sop}", f"cannot retrieve: {exc}", Stage.RETRIEVE)
                return
            except (DicomwebError, MultipartError, requests.RequestException, OSError) as exc:
                LOG.warning("series %s/%s: %s; fetching what is missing instance by instance",
                            study, series, redact(str(exc)))
        for sop in sorted(set(wanted) - state.done):
            identifier = f"{study}/{series}/{sop}"
            try:
                yield from self._retrieve(f"/studies/{study}/series/{series}/instances/{sop}", state,
                                          single=sop)
            except (DicomwebError, MultipartError, requests.RequestException, OSError) as exc:
                message = str(exc)
                if isinstance(exc, DicomwebError) and exc.status == 404:
                    message = "instance not found on the server"
                yield self._failure(identifier, f"cannot retrieve: {message}", Stage.RETRIEVE)
                continue
            if sop not in state.done and sop not in state.reported:
                yield self._failure(identifier, "the server's answer did not contain this instance",
                                    Stage.RETRIEVE)

    def _retrieve(self, path: str, state: _SeriesState, single: str | None) -> Iterator:
        """Stream one WADO-RS answer into place. A series gets one try (what it misses is
        then fetched instance by instance); a single instance is retried."""
        attempts = self.client.retry.attempts if single else 1
        for part_path, size in self.client.retrieve_to_files(path, self._temporary_file, self.transfer_syntax,
                                                             attempts):
            yield from self._place(part_path, size, state, single)

    def _place(self, part_path: str, size: int, state: _SeriesState, single: str | None) -> Iterator:
        where = f"{state.study}/{state.series}" + (f"/{single}" if single else "")
        try:
            instance = validate_file(FileRef(part_path, size), self.layout.keywords)
        except InvalidInstance as exc:
            if single is None:  # reported by the instance-by-instance pass, with its UID
                LOG.warning("series %s: the server sent an invalid instance: %s", where, exc)
                return
            state.reported.add(single)
            yield self._failure(where, f"the server sent an invalid instance ({exc.check}): {exc}",
                                Stage.VALIDATE)
            return
        identifier = f"{instance.study_uid}/{instance.series_uid}/{instance.sop_uid}"
        if instance.sop_uid in state.done:
            return  # placed already, from an earlier interrupted answer
        if (instance.study_uid, instance.series_uid) != (state.study, state.series) or (
                single is not None and instance.sop_uid != single):
            if single is not None:
                state.reported.add(single)
            yield self._failure(identifier, f"the server sent this instance when asked for {where}",
                                Stage.VALIDATE)
            return
        state.done.add(instance.sop_uid)
        if self.deidentifier is None:
            yield self.placements.output(place_instance(
                self.destination, self.layout, instance.values(), part_path, size, overwrite=self.overwrite,
                dry_run=self.dry_run))
        else:
            yield from self._place_deidentified(self.deidentifier, instance, identifier)

    def _place_deidentified(self, deidentifier: Deidentifier, instance: ValidInstance, identifier: str) -> Iterator:
        """De-identify the retrieved instance into a staged file, and place that (reports name the
        instance by its source identifier; the mapping rows go to their own output)."""
        result, deidentified = deidentify_and_place(
            deidentifier, instance, identifier, self.destination, self.layout, overwrite=self.overwrite,
            dry_run=self.dry_run)
        if deidentified:
            self.deidentified.inc()
        yield from deidentified
        yield self.placements.output(result)

    def _temporary_file(self):
        handle, path = tempfile.mkstemp(prefix=".part-", suffix=".partial",
                                        dir=self.destination.staging_directory())
        return path, os.fdopen(handle, "wb")

    @staticmethod
    def _failure(identifier: str, message: str, stage: Stage) -> beam.pvalue.TaggedOutput:
        return beam.pvalue.TaggedOutput(FAILURES, ErrorRecord.create(identifier, message, stage))


class _SeriesState:
    """What one series' retrieval has placed and reported so far."""

    def __init__(self, study: str, series: str, wanted: dict[str, bool]) -> None:
        self.study = study
        self.series = series
        self.wanted = wanted
        self.done: set[str] = set()
        self.reported: set[str] = set()


class RetrieveAndWrite(beam.PTransform):
    """Retrieve grouped series with WADO-RS and write each instance to a layout.

    A series wanted whole is fetched in one streamed ``multipart/related`` answer;
    single instances (and whatever an interrupted series stream did not deliver)
    are fetched one by one. Every part goes to a temporary file as it arrives, is
    validated like any input, must carry the UIDs asked for, and is placed
    atomically (``unchanged`` if already there). With ``deid``, each instance is de-identified
    (:func:`~dicom_transfer.transforms.deidentify.deidentify_file`) and placed by its new UIDs.

    Returns :class:`~.results.Transferred`: ``outcomes``, ``failures`` and ``mapping`` (empty without ``deid``).
    """

    def __init__(self, client: DicomwebClient, destination_url: str, layout: Layout,
                 transfer_syntax: str = "*", overwrite: bool = False, dry_run: bool = False,
                 deid: DeidSettings | None = None) -> None:
        super().__init__()
        self.fn = _RetrieveFn(client, destination_url, layout, transfer_syntax, overwrite, dry_run, deid)

    def expand(self, series: beam.PCollection) -> Transferred:
        result = series | "WadoRs" >> beam.ParDo(self.fn).with_outputs(FAILURES, OUTCOMES, MAPPING)
        return Transferred(result[OUTCOMES], result[FAILURES], result[MAPPING])
