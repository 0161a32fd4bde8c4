"""A PACS as a destination over DIMSE: C-STORE of validated instances, series by series."""

from __future__ import annotations

import collections
import concurrent.futures
import logging
from collections.abc import Iterable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics

from dicom_transfer import metrics
from dicom_transfer.dimse import FAILURE, WARNING, status_text, store_outcome
from dicom_transfer.elements import OUTCOMES, ValidInstance, instance_outcome
from dicom_transfer.errors import FAILURES, ErrorRecord
from dicom_transfer.io.c_store import CStoreSender
from dicom_transfer.io.dimse import DimseError, DimseSettings
from dicom_transfer.progress import ProgressLog
from dicom_transfer.transforms.dimse_source import WARNINGS
from dicom_transfer.transforms.dofn import DoFn, finished
from dicom_transfer.transforms.duplicates import UniqueBySopUid
from dicom_transfer.transforms.results import Deduplicated, Written
from dicom_transfer.vocabulary import Stage

LOG = logging.getLogger(__name__)
SERIES_IN_FLIGHT = 2  # per DoFn instance: the next series starts while the last stores of one finish
HELD, WOULD_STORE = "held", "would store"  # answers that are no status code


class _StoreFn(DoFn):
    """((study, series), [ValidInstance]) -> C-FIND what the PACS holds, C-STORE the rest."""

    def __init__(self, settings: DimseSettings, check_existing: bool, dry_run: bool) -> None:
        self.settings = settings
        self.check_existing = check_existing
        self.dry_run = dry_run
        self.counters = {kind: Metrics.counter(metrics.NAMESPACE, kind) for kind in (metrics.SUCCESS,
                                                                                     metrics.UNCHANGED)}
        self.bytes_sent = Metrics.counter(metrics.NAMESPACE, metrics.BYTES_WRITTEN)
        self.warnings = Metrics.counter(metrics.NAMESPACE, WARNINGS)

    def setup(self) -> None:
        self.sender = CStoreSender(self.settings)
        self.progress = ProgressLog("c-store")
        self.series_pool = concurrent.futures.ThreadPoolExecutor(SERIES_IN_FLIGHT)

    def teardown(self) -> None:
        if getattr(self, "series_pool", None) is not None:
            self.series_pool.shutdown(wait=True)
        if getattr(self, "sender", None) is not None:
            self.sender.close()

    def start_bundle(self) -> None:
        self.running: collections.deque[concurrent.futures.Future] = collections.deque()

    def process(self, element: tuple[tuple[str, str], Iterable[ValidInstance]]) -> Iterator:
        # The next series' C-FIND and first stores overlap the last stores of the one before;
        # outputs and Metrics on the bundle's thread, in order
        self.running.append(self.series_pool.submit(self._store_series, element))
        while self.running and (len(self.running) > SERIES_IN_FLIGHT or self.running[0].done()):
            yield from self._outputs(self.running.popleft().result())

    def finish_bundle(self) -> Iterator:
        while self.running:
            for output in self._outputs(self.running.popleft().result()):
                yield finished(output)

    def _outputs(self, answers: list[tuple[ValidInstance, int | str | None, str]]) -> Iterator:
        for instance, code, message in answers:
            if isinstance(code, str):  # HELD or WOULD_STORE: nothing was sent
                yield self._outcome(metrics.UNCHANGED if code == HELD else metrics.SUCCESS, instance)
            else:
                yield self._answer(instance, code, message)

    def _store_series(self, element: tuple[tuple[str, str], Iterable[ValidInstance]]
                      ) -> list[tuple[ValidInstance, int | str | None, str]]:
        """One series, on a thread of ``series_pool``: ``(instance, status code, HELD, WOULD_STORE
        or None, why not)`` for each instance."""
        (study, series), instances = element
        instances = sorted(instances, key=lambda i: i.sop_uid)
        held: set[str] = set()
        if self.check_existing:
            try:
                held = self.sender.held(study, series)
            except DimseError as exc:  # the C-STORE answers decide instead
                LOG.warning("series %s/%s: cannot ask the PACS what it holds (%s)", study, series, exc)
        answers: list[tuple[ValidInstance, int | str | None, str]] = [
            (instance, HELD, "") for instance in instances if instance.sop_uid in held]
        sending = [i for i in instances if i.sop_uid not in held]
        if self.dry_run:
            return answers + [(instance, WOULD_STORE, "") for instance in sending]
        return answers + self.sender.send(sending)

    def _answer(self, instance: ValidInstance, code: int | None, message: str) -> beam.pvalue.TaggedOutput:
        if code is None:
            return self._failure(instance, message)
        outcome = store_outcome(code)
        if outcome == WARNING:
            self.warnings.inc()
            LOG.warning("%s: C-STORE answered %s", instance.url, status_text(code))
            return self._outcome(metrics.SUCCESS, instance)
        if outcome == FAILURE:
            return self._failure(instance, f"C-STORE answered {status_text(code)}")
        return self._outcome(outcome, instance)

    def _outcome(self, kind: str, instance: ValidInstance) -> beam.pvalue.TaggedOutput:
        self.counters[kind].inc()
        sent = instance.size if kind == metrics.SUCCESS and not self.dry_run else 0
        self.bytes_sent.inc(sent)
        self.progress.add(1, sent)
        target = f"{self.settings.peer}/{instance.study_uid}/{instance.series_uid}/{instance.sop_uid}"
        return beam.pvalue.TaggedOutput(OUTCOMES, instance_outcome(kind, instance, target))

    @staticmethod
    def _failure(instance: ValidInstance, message: str) -> beam.pvalue.TaggedOutput:
        identifier = f"{instance.url} ({instance.study_uid}/{instance.series_uid}/{instance.sop_uid})"
        return beam.pvalue.TaggedOutput(FAILURES, ErrorRecord.create(identifier, message, Stage.STORE,
                                                                     uids=instance.uids))


def _by_series(instance: ValidInstance) -> tuple[tuple[str, str], ValidInstance]:
    return (instance.study_uid, instance.series_uid), instance


class DimseStoreInstances(beam.PTransform):
    """Store validated instances on a PACS with C-STORE.

    Instances are made unique by SOP Instance UID (:class:`UniqueBySopUid`) and
    grouped by series. Per series, one image-level C-FIND asks which of them the
    PACS holds already (``unchanged``, with ``check_existing``); the rest are sent
    on a pooled association whose presentation contexts are the series' own SOP
    classes and transfer syntaxes: each data set goes as its file holds it, never
    transcoded (an instance whose syntax the PACS does not accept is a failure
    record). Each C-STORE status becomes the instance's outcome: success, warning
    (counted ``dimse_warnings`` and logged), duplicate (``unchanged``) or failure.

    Returns :class:`~.results.Written`: ``outcomes`` and ``failures``.

    Example::

        stored = instances | DimseStoreInstances(settings)
    """

    def __init__(self, settings: DimseSettings, check_existing: bool = True, dry_run: bool = False) -> None:
        super().__init__()
        self.fn = _StoreFn(settings, check_existing, dry_run)

    def expand(self, instances: beam.PCollection) -> Written:
        resolved: Deduplicated = instances | "UniqueBySopUid" >> UniqueBySopUid(stage=Stage.STORE)
        stored = (
            resolved.unique
            | "KeyBySeries" >> beam.Map(_by_series)
            | "GroupBySeries" >> beam.GroupByKey()
            | "CStore" >> beam.ParDo(self.fn).with_outputs(FAILURES, OUTCOMES)
        )
        return Written((resolved.outcomes, stored[OUTCOMES]) | "Outcomes" >> beam.Flatten(),
                       (resolved.failures, stored[FAILURES]) | "Failures" >> beam.Flatten())

