"""Store instances on a DICOMweb server with batched, concurrent STOW-RS requests."""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
from collections.abc import Iterator, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics

from dicom_transfer import metrics, series_answers
from dicom_transfer.elements import OUTCOMES, ValidInstance, instance_outcome
from dicom_transfer.errors import FAILURES, ErrorRecord
from dicom_transfer.io.dicomweb import DicomwebClient, DicomwebError
from dicom_transfer.io.stow_requests import StowSender
from dicom_transfer.progress import ProgressLog
from dicom_transfer.series_answers import HeldFingerprint, SeriesKey, SeriesProgress
from dicom_transfer.stow import FAILURE, SUCCESS, UNCHANGED, plan_requests
from dicom_transfer.transforms.dofn import DoFn, finished
from dicom_transfer.transforms.duplicates import UniqueBySopUid
from dicom_transfer.transforms.migrate_targets import held_instances
from dicom_transfer.transforms.results import Deduplicated, Written
from dicom_transfer.vocabulary import Stage

__all__ = ["StoreInstances", "plan_requests"]

LOG = logging.getLogger(__name__)
ANSWERS = "answers"
REFUSED_QUESTION = frozenset({400, 403, 405, 501})  # a server that does not answer series-level queries


class HeldBySeries:
    """What the server holds, asked once per series and worker (one paged QIDO-RS), instead of
    once per STOW-RS request: on a first load that is one small empty answer per series rather
    than a round trip before every request. The last ``keep`` series are remembered; one
    thread asks, the others wait for its answer. Within a run the answer stays right: instances
    are unique by SOP UID across workers, so nobody else stores this worker's instances.
    """

    def __init__(self, client: DicomwebClient, keep: int = 256) -> None:
        self.client = client
        self.keep = keep
        self.lock = threading.Lock()
        self.known: collections.OrderedDict[tuple[str, str], concurrent.futures.Future] = collections.OrderedDict()

    def of(self, group: Sequence[ValidInstance]) -> set[str]:
        """The SOP UIDs of ``group`` the server holds; raises DicomwebError if it cannot tell."""
        held: set[str] = set()
        for study, series in sorted({(i.study_uid, i.series_uid) for i in group}):
            held |= self._series(study, series)
        return held & {i.sop_uid for i in group}

    def _series(self, study: str, series: str) -> set[str]:
        key = (study, series)
        with self.lock:
            known = self.known.get(key)
            asking = known is None
            future: concurrent.futures.Future = concurrent.futures.Future() if known is None else known
            if asking:
                self.known[key] = future
                while len(self.known) > self.keep:
                    self.known.popitem(last=False)
            else:
                self.known.move_to_end(key)
        if asking:
            try:
                future.set_result(self.client.series_instances(study, series))
            except DicomwebError as exc:
                with self.lock:
                    self.known.pop(key, None)  # ask again for the next request
                future.set_exception(exc)
        return future.result()

    def known_answer(self, study: str, series: str) -> set[str] | None:
        """What the server held of a series when it was asked, if it was, answered and still kept."""
        with self.lock:
            future = self.known.get((study, series))
        if future is None or not future.done() or future.exception() is not None:
            return None
        return future.result()


class _RecordingSender(StowSender[ValidInstance]):
    """A StowSender that notes the series of what it sends (``sent``), not of what it skips."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sent: set[SeriesKey] = set()

    def send(self, group: Sequence[ValidInstance]) -> list:
        self.sent.update((i.study_uid, i.series_uid) for i in group)
        return super().send(group)


class _StoreFn(DoFn):
    def __init__(self, client: DicomwebClient, max_instances: int, max_bytes: int,
                 concurrency: int, check_existing: bool, dry_run: bool = False,
                 answer_series: bool = False) -> None:
        self.dry_run = dry_run
        self.answer_series = answer_series and not dry_run
        self.client_settings = client.settings
        self.max_instances = max_instances
        self.max_bytes = max_bytes
        self.concurrency = concurrency
        self.check_existing = check_existing
        self.counters = {kind: Metrics.counter(metrics.NAMESPACE, kind)
                         for kind in (SUCCESS, UNCHANGED)}
        self.bytes_sent = Metrics.counter(metrics.NAMESPACE, metrics.BYTES_WRITTEN)

    def setup(self) -> None:
        self.client = DicomwebClient(**self.client_settings)  # one session per worker
        self.held = HeldBySeries(self.client)
        self.sender = _RecordingSender(self.client, self.check_existing, self.dry_run, existing=self.held.of)
        self.pool = concurrent.futures.ThreadPoolExecutor(self.concurrency)
        self.pending: collections.deque[tuple[concurrent.futures.Future, set[SeriesKey]]] = collections.deque()
        self.progress = ProgressLog("store")
        self.asking: collections.deque[concurrent.futures.Future] = collections.deque()
        self.series = SeriesProgress()
        self.acknowledged: collections.defaultdict[SeriesKey, set[str]] = collections.defaultdict(set)
        self.counts = True  # the server answers series-level counts (until it refuses one)

    def teardown(self) -> None:
        if getattr(self, "pool", None):
            self.pool.shutdown(wait=False)

    def process(self, batch: list[ValidInstance]) -> Iterator:
        # Requests stay in flight across batches: the next batch's requests are queued while this
        # one's are answered, so the server never waits for a batch to drain. At most two
        # requests per thread are queued; results leave in order, counted on this thread (the
        # pool only does the HTTP work; Beam's metrics belong to the DoFn's thread).
        for group in plan_requests(batch, self.max_instances, self.max_bytes):
            keys = {(i.study_uid, i.series_uid) for i in group}
            self.series.sending(keys)
            self.pending.append((self.pool.submit(self.sender.store, group), keys))
        while self.pending and (len(self.pending) > 2 * self.concurrency or self.pending[0][0].done()):
            yield from self._outputs(self._answered())

    def finish_bundle(self) -> Iterator:
        while self.pending:
            yield from map(finished, self._outputs(self._answered()))
            if self.answer_series:  # no batch follows: a series is done once its requests are
                # answered, and asked about while the others' last requests are sent
                self._ask(self.series.done())
        if self.answer_series:  # those whose requests were all answered before the bundle ended
            self._ask(self.series.done())
        while self.asking:
            yield from map(finished, self._answer(self.asking.popleft().result()))
        self.series = SeriesProgress()
        self.acknowledged.clear()
        self.sender.sent = set()
        self.progress.flush()

    def _answered(self) -> list:
        future, keys = self.pending.popleft()
        results = future.result()
        self.series.answered(keys)
        return results

    def _ask(self, keys: list[SeriesKey]) -> None:
        # on the STOW threads, after the requests already queued (a question never delays one)
        self.asking.extend(self.pool.submit(self._held, key, frozenset(self.acknowledged.pop(key, ())))
                           for key in keys)

    def _held(self, key: SeriesKey, acknowledged: frozenset[str]) -> tuple[SeriesKey, HeldFingerprint] | None:
        before = self.held.known_answer(*key)
        try:
            # Nothing of the series sent (a re-run: all held already): the existence check's answer
            # is still what the server holds, and Orthanc is spared reading the series' files again.
            if before is not None and key not in self.sender.sent:
                return key, HeldFingerprint.of(before)
            # Sent to: what it held before, plus what it acknowledged instance by instance, if its
            # count of the series says there is nothing else (see series_answers.claimed).
            if acknowledged and self.counts:
                claimed = series_answers.claimed(before or (), acknowledged, self._count(key))
                if claimed is not None:
                    return key, HeldFingerprint.of(claimed)
            return key, HeldFingerprint.of(held_instances(self.client, *key))
        except DicomwebError as exc:  # the reconciliation asks again
            LOG.debug("cannot ask about series %s/%s yet: %s", *key, exc)
            return None

    def _count(self, key: SeriesKey) -> int | None:
        """The server's count of the series; None (list the series instead) when it cannot give one,
        and, once it has refused the question, no more questions of this kind to it."""
        try:
            return self.client.series_count(*key)
        except DicomwebError as exc:
            if exc.status in REFUSED_QUESTION:
                self.counts = False
            LOG.debug("no count of series %s/%s: %s", *key, exc)
            return None

    @staticmethod
    def _answer(answer: tuple[SeriesKey, HeldFingerprint] | None) -> Iterator[beam.pvalue.TaggedOutput]:
        if answer is not None:
            yield beam.pvalue.TaggedOutput(ANSWERS, answer)

    def _outputs(self, results) -> Iterator[beam.pvalue.TaggedOutput]:
        for instance, kind, message in results:
            if kind == FAILURE:
                yield beam.pvalue.TaggedOutput(FAILURES, ErrorRecord.create(instance.url, message, Stage.STORE,
                                                                            uids=instance.uids))
                continue
            target = f"{self.client.safe_url}/studies/{instance.study_uid}/series/" \
                     f"{instance.series_uid}/instances/{instance.sop_uid}"
            self.counters[kind].inc()
            if self.answer_series:  # the server's word that it holds it (stored, or held already)
                self.acknowledged[(instance.study_uid, instance.series_uid)].add(instance.sop_uid)
            if kind == SUCCESS and not self.dry_run:
                self.bytes_sent.inc(instance.size)
            self.progress.add(1, instance.size if kind == SUCCESS else 0)
            yield beam.pvalue.TaggedOutput(OUTCOMES, instance_outcome(kind, instance, target))


class StoreInstances(beam.PTransform):
    """Store validated instances on a DICOMweb server (STOW-RS to ``{url}/studies``).

    Instances are made unique by SOP Instance UID first (:class:`UniqueBySopUid`),
    then sent several per request (at most ``max_instances`` and ``max_bytes``; an
    instance larger than ``max_bytes`` goes alone, streamed), with ``concurrency``
    requests in flight per worker, kept in flight across batches. Instances the server
    already holds are counted ``unchanged`` (one paged QIDO-RS query per series and
    worker when ``check_existing``, and from 409/duplicate answers). A request refused
    as a whole (400, 413, ...) is split to find the culprit; transient errors are retried with backoff. With
    ``dry_run`` nothing is sent: the instances the server does not hold are
    counted as what would be stored. With ``answer_series``, each series is asked about
    (QIDO-RS) as soon as its last request is answered, while the others are still sent, for the
    run's reconciliation (:mod:`~dicom_transfer.series_answers`). With ``in_one_process`` (a
    runner that executes the whole pipeline in this process), the first request leaves as soon as
    its instances are validated: duplicates are decided as instances arrive, not grouped.

    Returns :class:`~.results.Written`: ``outcomes``, ``failures`` and, with ``answer_series``,
    ``answers``.

    Example::

        stored = instances | StoreInstances(DicomwebClient("http://host/dicom-web"))
    """

    def __init__(self, client: DicomwebClient, max_instances: int = 32, max_bytes: int = 32 << 20,
                 concurrency: int = 4, check_existing: bool = True, dry_run: bool = False,
                 answer_series: bool = False, in_one_process: bool = False) -> None:
        super().__init__()
        self.in_one_process = in_one_process
        self.dry_run = dry_run
        self.answer_series = answer_series and not dry_run
        self.client = client
        self.max_instances = max_instances
        self.max_bytes = max_bytes
        self.concurrency = concurrency
        self.check_existing = check_existing

    def expand(self, instances: beam.PCollection) -> Written:
        resolved: Deduplicated = instances | "UniqueBySopUid" >> UniqueBySopUid(
            stage=Stage.STORE, in_one_process=self.in_one_process)
        stored = (
            resolved.unique
            | "Batch" >> beam.BatchElements(min_batch_size=self.max_instances * self.concurrency,
                                            max_batch_size=self.max_instances * self.concurrency)
            | "StowRs" >> beam.ParDo(_StoreFn(self.client, self.max_instances, self.max_bytes,
                                              self.concurrency, self.check_existing, self.dry_run,
                                              self.answer_series)
                                     ).with_outputs(FAILURES, OUTCOMES, ANSWERS)
        )
        outcomes = (resolved.outcomes, stored[OUTCOMES]) | "Outcomes" >> beam.Flatten()
        failures = (resolved.failures, stored[FAILURES]) | "Failures" >> beam.Flatten()
        return Written(outcomes, failures, stored[ANSWERS] if self.answer_series else None)
