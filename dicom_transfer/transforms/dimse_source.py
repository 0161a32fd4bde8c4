"""A PACS as a source over DIMSE: C-FIND to enumerate, C-GET or C-MOVE to retrieve.

The stages mirror the DICOMweb export (:mod:`dicom_transfer.transforms.retrieve`):
resources (identifiers, filter lines, or the studies of a date range) are expanded
to instances with C-FIND at series and image level, grouped by series (a fusion
break, so that retrieval spreads over workers), then retrieved series by series.
Every received data set is validated like any input, must carry the UIDs asked
for, and is placed by the same layout and unchanged/conflict rules.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics

from dicom_transfer import metrics
from dicom_transfer.dimse import group_contexts, status_category, status_text
from dicom_transfer.elements import OUTCOMES, FileRef, Outcome, ValidInstance
from dicom_transfer.errors import FAILURES, IO_ERRORS, ErrorRecord, error_text
from dicom_transfer.io.destination import Destination
from dicom_transfer.io.dimse import (
    COMMON_STORAGE_CLASSES,
    COMMON_SYNTAXES,
    EXPLICIT_AND_IMPLICIT,
    FIND_MODEL,
    GET_MODEL,
    MOVE_MODEL,
    RETRIEVE_SYNTAXES,
    DimseError,
    DimseSettings,
    final_counts,
    query,
)
from dicom_transfer.io.dimse_exchange import Arrival
from dicom_transfer.io.dimse_pool import AssociationPool
from dicom_transfer.io.instances import instance_identifier, validate_file
from dicom_transfer.layout import Layout
from dicom_transfer.part10 import InvalidInstance
from dicom_transfer.resources import ResourcePath
from dicom_transfer.transforms.deidentify import DEIDENTIFIED, MAPPING, DeidSettings, deidentify_and_place
from dicom_transfer.transforms.dofn import DoFn
from dicom_transfer.transforms.place import (
    Placements,
    clear_journal_entries,
    place_instance,
    read_journal_entry,
)
from dicom_transfer.transforms.results import Found, Resources, Transferred
from dicom_transfer.transforms.retrieve import RESOURCES, ResourcesToExport
from dicom_transfer.vocabulary import Stage

LOG = logging.getLogger(__name__)
INSTANCES = "instances"
WARNINGS = metrics.DIMSE_WARNINGS


class PeerDoFn(DoFn):
    """A DoFn that talks to one peer through the worker's :class:`AssociationPool`."""

    def __init__(self, settings: DimseSettings) -> None:
        self.settings = settings

    def setup(self) -> None:
        self.pool = AssociationPool.join(self.settings)

    def teardown(self) -> None:
        if getattr(self, "pool", None) is not None:
            self.pool.leave()

    def find(self, identifier) -> list:
        with self.pool.borrow([(FIND_MODEL, EXPLICIT_AND_IMPLICIT)]) as link:
            return list(link.find(identifier))


class _ListStudiesFn(PeerDoFn):
    """A study-level C-FIND per date chunk (``""``: every study) -> :class:`ResourcePath`."""

    def process(self, dates: str) -> Iterator:
        try:
            found = self.find(query("STUDY", StudyInstanceUID="", StudyDate=dates))
        except DimseError as exc:
            what = f"the studies of {dates}" if dates else "the studies"
            yield beam.pvalue.TaggedOutput(FAILURES, ErrorRecord.create(
                f"StudyDate={dates}" if dates else str(self.settings.peer), f"cannot list {what}: {exc}",
                Stage.EXPAND))
            return
        for identifier in found:
            study = str(identifier.get("StudyInstanceUID", "") or "")
            if study:
                yield ResourcePath(study)


class DimseResourcesToExport(beam.PTransform):
    """What to export from a PACS, as :class:`ResourcePath` values: identifiers, identifier
    and filter files (as :class:`ResourcesToExport`), or the studies a C-FIND finds, one
    study-level query per chunk of ``date_chunks`` (``[""]`` for every study).

    Example::

        resources = p | DimseResourcesToExport(settings, date_chunks=["20240101-20240107"])
    """

    def __init__(self, settings: DimseSettings, identifiers: Iterable[str] = (),
                 identifiers_file: str | None = None, filter_file: str | None = None,
                 date_chunks: Iterable[str] | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.given = ResourcesToExport(None, identifiers, identifiers_file, filter_file)
        self.date_chunks = None if date_chunks is None else list(date_chunks)

    def expand(self, pbegin: beam.pvalue.PBegin) -> Resources:
        given: Resources = pbegin | "Given" >> self.given
        if self.date_chunks is None:
            return given
        listed = (pbegin | "DateChunks" >> beam.Create(self.date_chunks)
                  | "SpreadChunks" >> beam.Reshuffle()
                  | "FindStudies" >> beam.ParDo(_ListStudiesFn(self.settings)).with_outputs(
                      FAILURES, main=RESOURCES))
        return Resources((given.resources, listed[RESOURCES]) | "AllResources" >> beam.Flatten(),
                         (given.failures, listed[FAILURES]) | "ListFailures" >> beam.Flatten())


class _ExpandFn(PeerDoFn):
    """ResourcePath -> ((study, series), (sop, sop_class, whole_series)) by C-FIND."""

    def process(self, resource: ResourcePath) -> Iterator:
        try:
            found = list(self._instances(resource))
        except DimseError as exc:
            yield beam.pvalue.TaggedOutput(FAILURES, ErrorRecord.create(
                resource.identifier, f"cannot resolve {resource.level}: {exc}", Stage.EXPAND))
            return
        if not found:
            yield beam.pvalue.TaggedOutput(FAILURES, ErrorRecord.create(
                resource.identifier, f"{resource.level} not found on the PACS (C-FIND matches no instance)",
                Stage.EXPAND))
            return
        yield from found

    def _instances(self, resource: ResourcePath) -> Iterator:
        study = resource.study
        series_list: dict[str, int | None]  # series UID: instance count, when C-FIND gave it
        if resource.series is not None:
            series_list = {resource.series: None}
        else:
            series_list = {}
            for item in self.find(query("SERIES", StudyInstanceUID=study, SeriesInstanceUID="",
                                        NumberOfSeriesRelatedInstances="")):
                count = item.get("NumberOfSeriesRelatedInstances")
                series_list[str(item.SeriesInstanceUID)] = int(count) if count not in (None, "") else None
        for series, count in series_list.items():
            keys = {"SOPInstanceUID": resource.instance or "", "SOPClassUID": ""}
            items = self.find(query("IMAGE", StudyInstanceUID=study, SeriesInstanceUID=series, **keys))
            if count is not None and count != len(items):
                LOG.warning("series %s/%s: C-FIND reports %d instances at series level, %d at image level",
                            study, series, count, len(items))
            for item in items:
                sop = str(item.get("SOPInstanceUID", "") or "")
                if sop:
                    yield (study, series), (sop, str(item.get("SOPClassUID", "") or ""), resource.instance is None)


class DimseExpandToInstances(beam.PTransform):
    """Resolve studies and series to instances with C-FIND (series, then image level),
    grouped by series: ``((study, series), [(sop, sop_class, whole_series), ...])``.
    A resource that matches nothing is one failure record.

    Example::

        series = resources | DimseExpandToInstances(settings)
    """

    def __init__(self, settings: DimseSettings) -> None:
        super().__init__()
        self.settings = settings

    def expand(self, resources: beam.PCollection) -> Found:
        expanded = resources | "CFind" >> beam.ParDo(_ExpandFn(self.settings)).with_outputs(
            FAILURES, main=INSTANCES)
        return Found(expanded[INSTANCES] | "GroupBySeries" >> beam.GroupByKey(), expanded[FAILURES])


class _Series:
    """One series being retrieved: what is wanted, and what the C-STORE handler delivered."""

    def __init__(self, study: str, series: str, wanted: dict[str, str]) -> None:
        self.study = study
        self.series = series
        self.wanted = wanted  # sop -> sop class
        self.wanted_sops = set(wanted)  # not made again for each instance: a series may hold thousands
        self.results: list[Outcome | ErrorRecord] = []
        self.deidentified: list[beam.pvalue.TaggedOutput] = []  # mapping rows, deidentified outcomes
        self.received: set[str] = set()
        self.lock = threading.Lock()

    def missing(self) -> list[str]:
        with self.lock:
            return sorted(set(self.wanted) - self.received)


def context_groups(wanted: dict[str, str]) -> list[list[tuple[str, str]]]:
    """Storage contexts for C-GET of instances ``{sop: sop class}``: their SOP classes, one
    context per syntax so that the PACS can send each instance as stored; the common classes
    when C-FIND did not say (``""``). Groups that each fit in one association."""
    classes = sorted({c for c in wanted.values() if c})
    pairs = [(c, syntax) for c in classes for syntax in RETRIEVE_SYNTAXES]
    if not all(wanted.values()):
        pairs += [(c, syntax) for c in COMMON_STORAGE_CLASSES if c not in classes for syntax in COMMON_SYNTAXES]
    return group_contexts(pairs, reserved=2)


def retrieval_contexts(group: list[tuple[str, str]], move_destination: str | None
                       ) -> tuple[list[tuple[str, tuple[str, ...]]], list[str]]:
    """The presentation contexts and SCP roles of a C-GET (the storage ``group`` comes back
    on the association) or of a C-MOVE (``move_destination``: only the model)."""
    contexts: list[tuple[str, tuple[str, ...]]] = [
        (MOVE_MODEL if move_destination else GET_MODEL, EXPLICIT_AND_IMPLICIT)]
    if move_destination:
        return contexts, []
    contexts += [(sop_class, (syntax,)) for sop_class, syntax in group]
    return contexts, sorted({sop_class for sop_class, _ in group})


class _RetrieveFn(PeerDoFn):
    def __init__(self, settings: DimseSettings, destination_url: str, layout: Layout, overwrite: bool,
                 dry_run: bool, move_destination: str | None, journal: str | None,
                 deid: DeidSettings | None = None) -> None:
        super().__init__(settings)
        self.deid = deid
        self.deidentified = Metrics.counter(metrics.NAMESPACE, DEIDENTIFIED)
        self.destination_url = destination_url
        self.layout = layout
        self.overwrite = overwrite
        self.dry_run = dry_run
        self.move_destination = move_destination
        self.journal = journal
        self.placements = Placements(dry_run)
        self.warnings = Metrics.counter(metrics.NAMESPACE, WARNINGS)

    def setup(self) -> None:
        super().setup()
        self.destination = Destination(self.destination_url)
        self.spool = None if self.dry_run else self.destination.staging_directory()  # placing is a rename
        self.placements.start("export")
        self.deidentifier = self.deid.deidentifier() if self.deid else None

    def process(self, element: tuple[tuple[str, str], Iterable[tuple[str, str, bool]]]) -> Iterator:
        (study, series), items = element
        wanted: dict[str, str] = {}
        whole = False
        for sop, sop_class, whole_series in items:
            wanted[sop] = sop_class or wanted.get(sop, "")
            whole = whole or whole_series
        state = _Series(study, series, wanted)
        groups = context_groups(wanted)
        failures: dict[str, str] = {}
        if whole and len(groups) == 1:
            failure = self._retrieve(state, query("SERIES", StudyInstanceUID=study, SeriesInstanceUID=series),
                                     groups[0])
            if failure:
                LOG.warning("series %s/%s: %s; retrieving what is missing instance by instance",
                            study, series, failure)
        for sop in state.missing():  # single instances, and what a series retrieval did not deliver
            sop_class = wanted[sop]
            for group in groups:  # the group of its class; every group in turn if the class is unknown
                if sop_class and all(c != sop_class for c, _ in group):
                    continue
                failure = self._retrieve(state, query("IMAGE", StudyInstanceUID=study,
                                                      SeriesInstanceUID=series, SOPInstanceUID=sop), group)
                if failure:
                    failures[sop] = failure
                if sop in state.received:
                    break
        yield from self._received(state)
        for sop in state.missing():
            reason = failures.get(sop, "the PACS did not send it")
            yield beam.pvalue.TaggedOutput(FAILURES, ErrorRecord.create(
                instance_identifier(study, series, sop), f"cannot retrieve: {reason}", Stage.RETRIEVE))

    def _received(self, state: _Series) -> Iterator:
        """What the C-STORE handler delivered, counted on the bundle's thread."""
        for output in state.deidentified:
            if output.tag == OUTCOMES:
                self.deidentified.inc()
            yield output
        for result in state.results:
            yield self.placements.output(result)

    def _retrieve(self, state: _Series, identifier, group: list[tuple[str, str]]) -> str | None:
        """One C-GET or C-MOVE; returns why it failed (``None`` if the PACS said success)."""
        contexts, roles = retrieval_contexts(group, self.move_destination)
        try:
            if self.move_destination and self.journal:
                clear_journal_entries(self.journal, state.study, state.series, state.missing())
            with self.pool.borrow(contexts, roles) as link:
                link.on_store = lambda arrival: self._receive(arrival, state)
                final = link.retrieve(identifier, self.move_destination, self.spool)
        except IO_ERRORS as exc:
            if not isinstance(exc, DimseError):
                return f"cannot clear the receiver's journal: {error_text(exc)}"
            self._reconcile(state)
            return str(exc)
        self._reconcile(state)
        code = int(final.Status)
        category = status_category(code)
        if category == "warning":
            self.warnings.inc()
            LOG.warning("%s/%s: retrieval answered %s %s", state.study, state.series, status_text(code),
                        final_counts(final))
        if category in ("success", "warning"):
            return None
        return f"{'C-MOVE' if self.move_destination else 'C-GET'} answered {status_text(code)}"

    def _receive(self, arrival: Arrival, state: _Series) -> int:
        """A C-STORE sub-operation of a C-GET (on the association's thread): validate and place
        the data set as received; the answer tells the PACS whether it was taken."""
        path = arrival.dataset_path
        checked = check_received(path, self.layout, (state.study, state.series), state.wanted_sops,
                                 arrival.sop_instance)
        deidentified: list[beam.pvalue.TaggedOutput] = []
        result: Outcome | ErrorRecord
        if isinstance(checked, ErrorRecord):
            result = checked
        elif self.deidentifier is None:
            result = place_instance(self.destination, self.layout, checked.values(), path, checked.size,
                                    overwrite=self.overwrite, dry_run=self.dry_run)
        else:
            result, deidentified = deidentify_and_place(
                self.deidentifier, checked, instance_identifier(checked.study_uid, checked.series_uid,
                                                                checked.sop_uid),
                self.destination, self.layout, overwrite=self.overwrite, dry_run=self.dry_run)
        with contextlib.suppress(OSError):
            os.unlink(path)  # still there if it was not moved into place (or was de-identified)
        with state.lock:
            state.deidentified += deidentified
            state.results.append(result)
            state.received.add(arrival.sop_instance or _named(result).rsplit("/", 1)[-1])
        return 0x0000 if isinstance(result, Outcome) else 0xA700 if result.stage == Stage.WRITE else 0xC000

    def _reconcile(self, state: _Series) -> None:
        """C-MOVE: what the receiver recorded in its journal for the instances still missing."""
        if not self.move_destination or not self.journal:
            return
        for sop in state.missing():
            try:
                result = read_journal_entry(self.journal, state.study, state.series, sop)
            except IO_ERRORS as exc:
                result = ErrorRecord.create(instance_identifier(state.study, state.series, sop),
                                            f"cannot read the receiver's journal: {error_text(exc)}", Stage.RETRIEVE)
            if result is not None:
                with state.lock:
                    state.results.append(result)
                    state.received.add(sop)


def _named(result: Outcome | ErrorRecord) -> str:
    return result.source if isinstance(result, Outcome) else result.identifier


def receive_file(path: str, destination: Destination, layout: Layout, expected: tuple[str, str] | None,
                 wanted: set[str] | None, *, overwrite: bool = False, dry_run: bool = False, sop: str = ""
                 ) -> Outcome | ErrorRecord:
    """Validate a received Part-10 file like any input, check it is an instance that was asked
    for (``expected`` study and series, SOP in ``wanted``; ``None``: anything), and place it.
    ``sop``: the SOP Instance UID the C-STORE announced, to name an instance that is not valid."""
    instance = check_received(path, layout, expected, wanted, sop)
    if isinstance(instance, ErrorRecord):
        return instance
    return place_instance(destination, layout, instance.values(), path, instance.size,
                          overwrite=overwrite, dry_run=dry_run)


def check_received(path: str, layout: Layout, expected: tuple[str, str] | None, wanted: set[str] | None,
                   sop: str = "") -> ValidInstance | ErrorRecord:
    """The received file validated and checked as :func:`receive_file` does, or why not."""
    try:
        instance = validate_file(FileRef(path, os.path.getsize(path)), layout.keywords)
    except InvalidInstance as exc:
        where = "/".join([*(expected or ("an instance",)), *([sop] if sop else [])])
        return ErrorRecord.create(where, f"the PACS sent an invalid instance ({exc.check}): {exc}", Stage.VALIDATE)
    except OSError as exc:
        return ErrorRecord.create(path, f"cannot read what was received: {error_text(exc)}", Stage.READ)
    identifier = instance_identifier(instance.study_uid, instance.series_uid, instance.sop_uid)
    if expected is not None and ((instance.study_uid, instance.series_uid) != expected
                                 or (wanted is not None and instance.sop_uid not in wanted)):
        return ErrorRecord.create(identifier, f"the PACS sent this instance when asked for {'/'.join(expected)}",
                                  Stage.VALIDATE)
    return instance


class DimseRetrieveAndWrite(beam.PTransform):
    """Retrieve grouped series from a PACS and write each instance to a layout.

    By C-GET (default): the instances come back on the worker's own association
    (presentation contexts per series: its storage SOP classes from C-FIND, each
    with the usual transfer syntaxes, so the PACS sends each as stored) and are
    validated and placed as they arrive. By C-MOVE (``move_destination``): the
    PACS sends them to a storage SCP outside the pipeline (``dicom-transfer
    receive``, or the one ``export`` starts), which validates and places them and
    records each in its ``journal``; the worker reconciles from that journal once
    the C-MOVE answers. What a series retrieval did not deliver is retrieved
    instance by instance; what still fails is one record per instance. With ``deid`` (C-GET
    only), each instance is de-identified as it arrives and placed by its new UIDs.

    Returns :class:`~.results.Transferred`: ``outcomes``, ``failures`` and ``mapping`` (empty without ``deid``).
    """

    def __init__(self, settings: DimseSettings, destination_url: str, layout: Layout, overwrite: bool = False,
                 dry_run: bool = False, move_destination: str | None = None, journal: str | None = None,
                 deid: DeidSettings | None = None) -> None:
        super().__init__()
        if deid is not None and move_destination:
            raise ValueError("de-identification needs C-GET: with C-MOVE a receiver outside the pipeline "
                             "places the instances")
        self.fn = _RetrieveFn(settings, destination_url, layout, overwrite, dry_run, move_destination, journal,
                              deid)

    def expand(self, series: beam.PCollection) -> Transferred:
        result = series | "Retrieve" >> beam.ParDo(self.fn).with_outputs(FAILURES, OUTCOMES, MAPPING)
        return Transferred(result[OUTCOMES], result[FAILURES], result[MAPPING])
