"""Migrate series from a PACS (C-GET) to a DICOMweb server: the ``migrate`` stage with
DIMSE retrieval in place of WADO-RS.

Everything but the retrieval is :class:`~dicom_transfer.transforms.migrate.MigrateSeries`'s:
one QIDO-RS per series on the destination says what it holds already, only the rest is
retrieved, each received data set is spooled and validated like any input, sent with batched
STOW-RS while the next ones arrive, and verified. The C-STORE sub-operations of a C-GET arrive
on the thread that runs it; they are handed to the series' thread through a bounded queue, so
that STOW-RS requests go out while the PACS is still sending and the spool stays bounded.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator

import apache_beam as beam

from dicom_transfer.dimse import status_category, status_text
from dicom_transfer.errors import FAILURES
from dicom_transfer.io.dicomweb import DicomwebClient
from dicom_transfer.io.dimse import AssociationPool, DimseError, DimseSettings, final_counts, query
from dicom_transfer.transforms.dimse_source import context_groups, retrieval_contexts
from dicom_transfer.transforms.migrate import _MigrateSeriesFn, _SeriesRun
from dicom_transfer.transforms.outcomes import OUTCOMES
from dicom_transfer.transforms.validate import ValidInstance

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

    def receive(self, event) -> int:
        """A C-STORE sub-operation (on the C-GET's thread): move the received Part-10 file into
        the spool and queue it. The data set is validated on the series' thread; an instance
        that fails there is a record of this run, not of the PACS."""
        path = str(event.dataset_path)
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

    def __init__(self, settings: DimseSettings, destination: DicomwebClient, max_instances: int,
                 max_bytes: int, concurrency: int, verify_bytes: bool, dry_run: bool) -> None:
        super().__init__(None, destination, max_instances, max_bytes, concurrency, verify_bytes, dry_run)
        self.settings = settings

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

    def process(self, element: tuple[tuple[str, str], Iterable[tuple[str, str, bool]]]) -> Iterator:
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
        groups = context_groups({sop: classes.get(sop, "") for sop in plan.missing})
        if plan.fetch_whole_series and len(groups) == 1:
            identifier = query("SERIES", StudyInstanceUID=plan.study, SeriesInstanceUID=plan.series)
            failure = yield from self._get(run, identifier, groups[0], None)
            if failure:
                LOG.warning("series %s: %s; retrieving what is missing instance by instance",
                            plan.identifier, failure)
        for sop in plan.missing:
            failure = None
            for group in groups:  # the group of its class; every group in turn if the class is unknown
                if run.settled(sop):
                    break
                if classes.get(sop) and all(c != classes[sop] for c, _ in group):
                    continue
                identifier = query("IMAGE", StudyInstanceUID=plan.study, SeriesInstanceUID=plan.series,
                                   SOPInstanceUID=sop)
                failure = (yield from self._get(run, identifier, group, sop)) or failure
            if not run.settled(sop):
                run.fail(sop, f"cannot retrieve from the PACS: {failure or 'the PACS did not send it'}", "retrieve")

    def _get(self, run: _SeriesRun, identifier, group: list[tuple[str, str]], single: str | None
             ) -> Iterator[ValidInstance]:
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
                final = link.retrieve(identifier)
        except DimseError as exc:
            return str(exc)
        finally:
            arrivals.done()
        code = int(final.Status)
        category = status_category(code)
        if category == "warning":
            LOG.warning("C-GET %s/%s answered %s %s", identifier.StudyInstanceUID, identifier.SeriesInstanceUID,
                        status_text(code), final_counts(final))
        return None if category in ("success", "warning") else f"C-GET answered {status_text(code)}"


class DimseMigrateSeries(beam.PTransform):
    """Move grouped series (as :class:`DimseExpandToInstances` gives them) from a PACS to a
    DICOMweb server, and verify: :class:`~dicom_transfer.transforms.migrate.MigrateSeries`
    with C-GET (presentation contexts per series from the SOP classes C-FIND reported, each
    instance received as stored) in place of WADO-RS.

    Returns a dict with ``outcomes`` and ``failures``.

    Example::

        series = resources | DimseExpandToInstances(settings)
        moved = series["instances"] | DimseMigrateSeries(settings, destination)
    """

    def __init__(self, settings: DimseSettings, destination: DicomwebClient, max_instances: int = 32,
                 max_bytes: int = 32 << 20, concurrency: int = 4, verify_bytes: bool = False,
                 dry_run: bool = False) -> None:
        super().__init__()
        self.fn = _DimseMigrateSeriesFn(settings, destination, max_instances, max_bytes, concurrency,
                                        verify_bytes, dry_run)

    def expand(self, series: beam.PCollection) -> dict[str, beam.PCollection]:
        result = series | "RetrieveStoreVerify" >> beam.ParDo(self.fn).with_outputs(FAILURES, OUTCOMES)
        return {OUTCOMES: result[OUTCOMES], FAILURES: result[FAILURES]}
