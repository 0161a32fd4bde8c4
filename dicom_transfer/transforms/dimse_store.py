"""A PACS as a destination over DIMSE: C-STORE of validated instances, series by series."""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from dicom_transfer import metrics
from dicom_transfer.dimse import DUPLICATE_SOP_INSTANCE, group_contexts, status_category, status_text
from dicom_transfer.errors import FAILURES, IO_ERRORS, ErrorRecord, error_text
from dicom_transfer.io.destination import Destination
from dicom_transfer.io.dimse import FIND_MODEL, DimseError, DimseSettings, NoContext, query
from dicom_transfer.io.files import local_path
from dicom_transfer.progress import ProgressLog
from dicom_transfer.transforms.dimse_source import EXPLICIT_AND_IMPLICIT, WARNINGS, PeerDoFn
from dicom_transfer.transforms.duplicates import UNIQUE, UniqueBySopUid
from dicom_transfer.transforms.outcomes import OUTCOMES, instance_outcome
from dicom_transfer.transforms.validate import ValidInstance
from dicom_transfer.vocabulary import Stage

LOG = logging.getLogger(__name__)
ATTEMPTS = 3  # per instance, when the association breaks or is refused
PER_LANE = 16  # instances per association at least, before another one is opened
SERIES_IN_FLIGHT = 2  # per DoFn instance: the next series starts while the last stores of one finish
HELD, WOULD_STORE = "held", "would store"  # answers that are no status code


def sop_class_of(path: str) -> str:
    """The Media Storage SOP Class UID of a Part-10 file (its file meta only is read).

    Raises
    ------
    OSError, ValueError
        The file cannot be read or has no SOP class in its file meta.
    """
    from pydicom.filereader import read_file_meta_info

    sop_class = read_file_meta_info(path).get("MediaStorageSOPClassUID")
    if not sop_class:
        raise ValueError("its file meta information names no Media Storage SOP Class UID")
    return str(sop_class)


class _StoreFn(PeerDoFn):
    """((study, series), [ValidInstance]) -> C-FIND what the PACS holds, C-STORE the rest."""

    def __init__(self, settings: DimseSettings, check_existing: bool, dry_run: bool) -> None:
        super().__init__(settings)
        self.check_existing = check_existing
        self.dry_run = dry_run
        self.counters = {kind: Metrics.counter(metrics.NAMESPACE, kind) for kind in (metrics.SUCCESS,
                                                                                     metrics.UNCHANGED)}
        self.bytes_sent = Metrics.counter(metrics.NAMESPACE, metrics.BYTES_WRITTEN)
        self.warnings = Metrics.counter(metrics.NAMESPACE, WARNINGS)

    def setup(self) -> None:
        super().setup()
        self.progress = ProgressLog("c-store")
        self.executor = concurrent.futures.ThreadPoolExecutor(self.settings.max_associations)
        self.series_pool = concurrent.futures.ThreadPoolExecutor(SERIES_IN_FLIGHT)

    def teardown(self) -> None:
        for pool in (getattr(self, "series_pool", None), getattr(self, "executor", None)):
            if pool is not None:
                pool.shutdown(wait=True)
        super().teardown()

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
                yield beam.pvalue.TaggedOutput(output.tag, GlobalWindows.windowed_value(output.value))

    def _outputs(self, answers: list[tuple[ValidInstance, int | str | None, str]]) -> Iterator:
        for instance, code, message in answers:
            if code == HELD:
                yield self._outcome(metrics.UNCHANGED, instance)
            elif code == WOULD_STORE:
                yield self._outcome(metrics.SUCCESS, instance)
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
                held = {str(item.get("SOPInstanceUID", "")) for item in self.find(
                    query("IMAGE", StudyInstanceUID=study, SeriesInstanceUID=series, SOPInstanceUID=""))}
            except DimseError as exc:  # the C-STORE answers decide instead
                LOG.warning("series %s/%s: cannot ask the PACS what it holds (%s)", study, series, exc)
        answers: list[tuple[ValidInstance, int | str | None, str]] = [
            (instance, HELD, "") for instance in instances if instance.sop_uid in held]
        sending = [i for i in instances if i.sop_uid not in held]
        if self.dry_run:
            return answers + [(instance, WOULD_STORE, "") for instance in sending]
        return answers + self._send(sending)

    def _send(self, instances: list[ValidInstance]) -> list[tuple[ValidInstance, int | None, str]]:
        answers: list[tuple[ValidInstance, int | None, str]] = []
        files: list[tuple[ValidInstance, str, str, bool]] = []  # instance, local path, SOP class, temporary
        for instance in instances:
            try:
                path, temporary = _local_copy(instance.url, instance.size)
                files.append((instance, path, sop_class_of(path), temporary))
            except IO_ERRORS as exc:
                answers.append((instance, None, f"cannot read it: {error_text(exc)}"))
        try:
            pairs = [(sop_class, instance.transfer_syntax) for instance, _, sop_class, _ in files]
            for group in group_contexts(pairs, reserved=1):
                # C-FIND too: the next series' question goes on one of these associations
                contexts = [(FIND_MODEL, EXPLICIT_AND_IMPLICIT), *((c, (syntax,)) for c, syntax in group)]
                chosen = [f for f in files if (f[2], f[0].transfer_syntax) in set(group)]
                # several associations at once: a PACS stores one while it receives the next
                lanes = max(1, min(self.settings.max_associations, len(chosen) // PER_LANE))
                for lane_answers in self.executor.map(self._store_lane, [chosen[n::lanes] for n in range(lanes)],
                                                      [contexts] * lanes):
                    answers += lane_answers
        finally:
            for _, path, _, temporary in files:
                if temporary:
                    with contextlib.suppress(OSError):
                        os.unlink(path)
        return answers

    def _store_lane(self, files: list, contexts: list) -> list[tuple[ValidInstance, int | None, str]]:
        """C-STORE each file on a pooled association: ``(instance, status code or None, why not)``.
        When the association breaks or cannot be opened, the rest go on a new one; the instance
        at hand is tried ``ATTEMPTS`` times in all, then it is a failure."""
        answers = []
        remaining = list(files)
        tries = 0
        while remaining:
            try:
                with self.pool.borrow(contexts) as link:
                    while remaining:
                        instance, path, _, _ = remaining[0]
                        try:
                            code = link.store(path)
                        except NoContext as exc:  # this instance's own problem: the rest go on
                            remaining.pop(0)
                            answers.append((instance, None, str(exc)))
                            continue
                        remaining.pop(0)
                        tries = 0
                        answers.append((instance, code, ""))
            except DimseError as exc:
                tries += 1
                if tries >= ATTEMPTS:
                    tries = 0
                    answers.append((remaining.pop(0)[0], None, f"C-STORE failed: {exc}"))
                else:
                    time.sleep(0.2 * tries)
        return answers

    def _answer(self, instance: ValidInstance, code: int | None, message: str) -> beam.pvalue.TaggedOutput:
        if code is None:
            return self._failure(instance, message)
        category = status_category(code)
        if code == DUPLICATE_SOP_INSTANCE:
            return self._outcome(metrics.UNCHANGED, instance)
        if category == "warning":
            self.warnings.inc()
            LOG.warning("%s: C-STORE answered %s", instance.url, status_text(code))
        if category in ("success", "warning"):
            return self._outcome(metrics.SUCCESS, instance)
        return self._failure(instance, f"C-STORE answered {status_text(code)}")

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


def _local_copy(url: str, size: int) -> tuple[str, bool]:
    """A local path holding the bytes at ``url``: the file itself, or a temporary copy."""
    path = local_path(url)
    if path is not None:
        return path, False
    handle, temporary = tempfile.mkstemp(prefix=".c-store-", suffix=".dcm")
    os.close(handle)
    try:
        Destination(os.path.dirname(temporary)).write(os.path.basename(temporary), url, size, overwrite=True)
    except BaseException:
        os.unlink(temporary)
        raise
    return temporary, True


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

    Returns a dict with ``outcomes`` and ``failures``.

    Example::

        stored = instances | DimseStoreInstances(settings)
    """

    def __init__(self, settings: DimseSettings, check_existing: bool = True, dry_run: bool = False) -> None:
        super().__init__()
        self.fn = _StoreFn(settings, check_existing, dry_run)

    def expand(self, instances: beam.PCollection) -> dict[str, beam.PCollection]:
        resolved = instances | "UniqueBySopUid" >> UniqueBySopUid(stage=Stage.STORE)
        stored = (
            resolved[UNIQUE]
            | "KeyBySeries" >> beam.Map(_by_series)
            | "GroupBySeries" >> beam.GroupByKey()
            | "CStore" >> beam.ParDo(self.fn).with_outputs(FAILURES, OUTCOMES)
        )
        return {OUTCOMES: (resolved[OUTCOMES], stored[OUTCOMES]) | "Outcomes" >> beam.Flatten(),
                FAILURES: (resolved[FAILURES], stored[FAILURES]) | "Failures" >> beam.Flatten()}

