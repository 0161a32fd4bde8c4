"""Migrate series from a PACS (C-GET or C-MOVE) to a DICOMweb server: the ``migrate`` stage
with DIMSE retrieval in place of WADO-RS.

Everything but the retrieval is :class:`~dicom_transfer.transforms.migrate.MigrateSeries`'s:
one QIDO-RS per series on the destination says what it holds already, only the rest is
retrieved, each received data set is spooled and validated like any input, sent with batched
STOW-RS while the next ones arrive, and verified. The C-STORE sub-operations of a C-GET arrive
on the thread that runs it; they are handed to the series' thread through a bounded queue, so
that STOW-RS requests go out while the PACS is still sending and the spool stays bounded.
With C-MOVE, a receiver outside the workers stages what the PACS sends (in a folder or bucket
the workers can read) and journals it; once the PACS answers, the worker takes the staged
files named in the journal into its spool.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Generator, Iterable, Iterator

import apache_beam as beam

from dicom_transfer.dimse import status_category, status_text
from dicom_transfer.elements import OUTCOMES, ValidInstance
from dicom_transfer.errors import FAILURES, IO_ERRORS, ErrorRecord, error_text
from dicom_transfer.io.dicomweb import DicomwebClient
from dicom_transfer.io.dimse import DimseError, DimseSettings, final_counts, query
from dicom_transfer.io.dimse_exchange import Arrival
from dicom_transfer.io.dimse_pool import AssociationPool
from dicom_transfer.io.files import local_path, open_url, split_url
from dicom_transfer.transforms.deidentify import MAPPING, DeidSettings
from dicom_transfer.transforms.dimse_source import context_groups, retrieval_contexts
from dicom_transfer.transforms.migrate import _MigrateSeriesFn, _SeriesRun
from dicom_transfer.transforms.place import clear_journal_entries, read_journal_entry
from dicom_transfer.transforms.results import Transferred
from dicom_transfer.vocabulary import Stage

LOG = logging.getLogger(__name__)
_DONE = object()
REFUSED = 0xA700  # out of resources: the series' thread stopped taking instances


class _Arrivals:
    """The instances one C-GET delivers, from its C-STORE handler to the series' thread."""

    def __init__(self, spool: str, size: int, timeout: float) -> None:
        self.spool = spool
        self.queue: queue.Queue = queue.Queue(maxsize=size)
        self.timeout = timeout
        self.closed = threading.Event()

    def receive(self, arrival: Arrival) -> int:
        """A C-STORE sub-operation (on the C-GET's thread): move the received Part-10 file into
        the spool and queue it. The data set is validated on the series' thread; an instance
        that fails there is a record of this run, not of the PACS."""
        path = arrival.dataset_path
        if self.closed.is_set():
            os.unlink(path)
            return REFUSED
        handle, part = tempfile.mkstemp(prefix=".get-", dir=self.spool)
        os.close(handle)
        try:
            shutil.move(path, part)
            self.queue.put((part, os.path.getsize(part)), timeout=self.timeout)
        except (OSError, queue.Full) as exc:  # asked again on its own later, if still missing
            LOG.warning("cannot take a received instance into the spool: %s", exc or "no room in time")
            for leftover in (path, part):
                if os.path.exists(leftover):
                    os.unlink(leftover)
            return REFUSED
        return 0x0000

    def done(self) -> None:
        self.queue.put(_DONE)

    def __iter__(self) -> Iterator[tuple[str, int]]:
        while (item := self.queue.get()) is not _DONE:
            yield item

    def close(self) -> None:
        """The series' thread takes no more: refuse what comes, drop what was queued."""
        self.closed.set()
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return
            if item is not _DONE:
                os.unlink(item[0])


class _DimseMigrateSeriesFn(_MigrateSeriesFn):
    """((study, series), [(sop, sop_class, whole), ...]) -> outcomes and failure records."""

    def __init__(self, settings: DimseSettings, destination: DicomwebClient | DimseSettings, max_instances: int,
                 max_bytes: int, concurrency: int, verify_bytes: bool, dry_run: bool,
                 move_destination: str | None = None, journal: str | None = None,
                 deid: DeidSettings | None = None) -> None:
        super().__init__(None, destination, max_instances, max_bytes, concurrency, verify_bytes, dry_run, deid)
        self.settings = settings
        self.move_destination = move_destination
        self.journal = journal

    def setup(self) -> None:
        super().setup()
        self.peers = AssociationPool.join(self.settings)
        self.retrievals = concurrent.futures.ThreadPoolExecutor(self.concurrency)  # one C-GET per series
        self.classes: dict[tuple[str, str], dict[str, str]] = {}

    def teardown(self) -> None:
        if getattr(self, "retrievals", None) is not None:
            self.retrievals.shutdown(wait=False)
        super().teardown()
        if getattr(self, "peers", None) is not None:
            self.peers.leave()

    def process(  # type: ignore[override]  # C-FIND also says each instance's SOP class
            self, element: tuple[tuple[str, str], Iterable[tuple[str, str, bool]]]) -> Iterator:
        series, items = element[0], list(element[1])
        classes = self.classes.setdefault(series, {})
        for sop, sop_class, _ in items:
            classes[sop] = sop_class or classes.get(sop, "")
        yield from super().process((series, [(sop, whole) for sop, _, whole in items]))

    def _retrieve(self, run: _SeriesRun) -> Iterator[ValidInstance]:
        """The missing instances, spooled: one series-level C-GET when that pays and one
        association can carry every SOP class, then one C-GET per instance still missing."""
        plan = run.plan
        classes = self.classes.pop((plan.study, plan.series), {})
        # C-MOVE needs no storage contexts: one pass
        groups = [[]] if self.move_destination else context_groups({s: classes.get(s, "") for s in plan.missing})
        fetch = self._move if self.move_destination else self._get
        if plan.fetch_whole_series and len(groups) == 1:
            identifier = query("SERIES", StudyInstanceUID=plan.study, SeriesInstanceUID=plan.series)
            failure = yield from fetch(run, identifier, groups[0], None)
            if failure:
                LOG.warning("series %s: %s; retrieving what is missing instance by instance",
                            plan.identifier, failure)
        for sop in plan.missing:
            failure = None
            for group in groups:  # the group of its class; every group in turn if the class is unknown
                if run.settled(sop):
                    break
                if group and classes.get(sop) and all(c != classes[sop] for c, _ in group):
                    continue
                identifier = query("IMAGE", StudyInstanceUID=plan.study, SeriesInstanceUID=plan.series,
                                   SOPInstanceUID=sop)
                failure = (yield from fetch(run, identifier, group, sop)) or failure
            if not run.settled(sop):
                run.fail(sop, f"cannot retrieve from the PACS: {failure or 'the PACS did not send it'}", Stage.RETRIEVE)

    def _get(self, run: _SeriesRun, identifier, group: list[tuple[str, str]], single: str | None
             ) -> Generator[ValidInstance, None, str | None]:
        """One C-GET on a pooled association (run on ``retrievals``), its instances validated
        and yielded as they arrive; returns why it failed (``None``: the PACS said success)."""
        arrivals = _Arrivals(run.spool, 4 * self.max_instances * self.concurrency, self.settings.timeout)
        retrieval = self.retrievals.submit(self._c_get, identifier, group, arrivals)
        try:
            for part, size in arrivals:
                instance = self._accept(part, size, run, single)
                if instance is not None:
                    yield instance
        finally:
            arrivals.close()
        return retrieval.result()

    def _c_get(self, identifier, group: list[tuple[str, str]], arrivals: _Arrivals) -> str | None:
        contexts, roles = retrieval_contexts(group, None)
        try:
            with self.peers.borrow(contexts, roles) as link:
                link.on_store = arrivals.receive
                final = link.retrieve(identifier, spool=arrivals.spool)
        except DimseError as exc:
            return str(exc)
        finally:
            arrivals.done()
        return _failure_of(final, identifier, "C-GET")

    def _move(self, run: _SeriesRun, identifier, group: list[tuple[str, str]], single: str | None
              ) -> Generator[ValidInstance, None, str | None]:
        """One C-MOVE to the receiver, then the staged instances its journal names, validated and
        yielded; returns why it failed (``None``: the PACS said success)."""
        plan, journal = run.plan, self.journal
        assert journal is not None, "C-MOVE is configured with the receiver's journal"
        sops = [single] if single else [sop for sop in plan.missing if not run.settled(sop)]
        try:  # an entry from an earlier run is never taken for this one's
            clear_journal_entries(journal, plan.study, plan.series, sops)
        except IO_ERRORS as exc:
            return f"cannot clear the receiver's journal: {error_text(exc)}"
        contexts, roles = retrieval_contexts(group, self.move_destination)
        try:
            with self.peers.borrow(contexts, roles) as link:
                failure = _failure_of(link.retrieve(identifier, self.move_destination), identifier, "C-MOVE")
        except DimseError as exc:
            failure = str(exc)
        for sop in sops:
            try:
                entry = read_journal_entry(journal, plan.study, plan.series, sop)
                if isinstance(entry, ErrorRecord):
                    run.fail(sop, entry.error, entry.stage)
                elif entry is not None and not run.settled(sop):
                    instance = self._accept(*_unstage(entry.destination, run.spool), run, single)
                    if instance is not None:
                        yield instance
            except IO_ERRORS as exc:
                run.fail(sop, f"cannot take it from the receiver's staging area: {error_text(exc)}", Stage.RETRIEVE)
                continue
            if entry is not None:  # taken: the staging area keeps nothing of it
                try:
                    clear_journal_entries(journal, plan.study, plan.series, [sop])
                except IO_ERRORS as exc:
                    LOG.warning("cannot remove %s/%s from the receiver's journal: %s", plan.identifier, sop,
                                error_text(exc))
        return failure


def _failure_of(final, identifier, operation: str) -> str | None:
    """Why a C-GET or C-MOVE failed, from its final response (``None``: success or warning)."""
    code = int(final.Status)
    category = status_category(code)
    if category == "warning":
        LOG.warning("%s %s/%s answered %s %s", operation, identifier.StudyInstanceUID,
                    identifier.SeriesInstanceUID, status_text(code), final_counts(final))
    return None if category in ("success", "warning") else f"{operation} answered {status_text(code)}"


def _unstage(url: str, spool: str) -> tuple[str, int]:
    """Move a file the C-MOVE receiver staged into the spool; ``(path, size)``."""
    handle, part = tempfile.mkstemp(prefix=".move-", dir=spool)
    os.close(handle)
    path = local_path(url)
    if path is not None:
        shutil.move(path, part)
    else:
        with open_url(url) as staged, open(part, "wb") as spooled:
            shutil.copyfileobj(staged, spooled, 1 << 20)
        fs, remote = split_url(url)
        fs.rm_file(remote)
    return part, os.path.getsize(part)


class DimseMigrateSeries(beam.PTransform):
    """Move grouped series (as :class:`DimseExpandToInstances` gives them) from a PACS to a
    DICOMweb server, and verify: :class:`~dicom_transfer.transforms.migrate.MigrateSeries`
    with C-GET (presentation contexts per series from the SOP classes C-FIND reported, each
    instance received as stored) in place of WADO-RS, or C-MOVE to ``move_destination``, a
    receiver that stages what it receives and records it in ``journal``. With ``deid``, each
    retrieved instance is de-identified before it is sent, as by ``MigrateSeries``.

    Returns :class:`~.results.Transferred`: ``outcomes``, ``failures`` and ``mapping`` (empty without ``deid``).

    Example::

        series = resources | DimseExpandToInstances(settings)
        moved = series.instances | DimseMigrateSeries(settings, destination)
    """

    def __init__(self, settings: DimseSettings, destination: DicomwebClient | DimseSettings,
                 max_instances: int = 32,
                 max_bytes: int = 32 << 20, concurrency: int = 4, verify_bytes: bool = False,
                 dry_run: bool = False, move_destination: str | None = None, journal: str | None = None,
                 deid: DeidSettings | None = None) -> None:
        super().__init__()
        self.fn = _DimseMigrateSeriesFn(settings, destination, max_instances, max_bytes, concurrency,
                                        verify_bytes, dry_run, move_destination, journal, deid)

    def expand(self, series: beam.PCollection) -> Transferred:
        result = series | "RetrieveStoreVerify" >> beam.ParDo(self.fn).with_outputs(FAILURES, OUTCOMES, MAPPING)
        return Transferred(result[OUTCOMES], result[FAILURES], result[MAPPING])
