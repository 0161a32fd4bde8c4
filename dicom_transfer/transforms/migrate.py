"""Migrate series from one DICOMweb server to another: ask the destination what it holds,
retrieve only the rest (WADO-RS, streamed to spool files), store it with batched STOW-RS,
then verify."""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics

from dicom_transfer import metrics
from dicom_transfer.deid.rewrite import DeidentificationError, Deidentifier
from dicom_transfer.dimse import WARNING
from dicom_transfer.elements import OUTCOMES, FileRef, Outcome, ValidInstance
from dicom_transfer.errors import FAILURES, IO_ERRORS, ErrorRecord, error_text
from dicom_transfer.io.checksums import sha256_of_url
from dicom_transfer.io.dicomweb import DicomwebClient, DicomwebError
from dicom_transfer.io.dimse import DimseSettings
from dicom_transfer.io.instances import validate_file
from dicom_transfer.migration import SeriesPlan, plan_series, same, still_missing
from dicom_transfer.part10 import InvalidInstance
from dicom_transfer.progress import ProgressLog, format_bytes
from dicom_transfer.stow import FAILURE, SUCCESS, UNCHANGED, RequestBatcher
from dicom_transfer.transforms.deidentify import DEIDENTIFIED, MAPPING, DeidSettings, MappingRow, deidentify_file
from dicom_transfer.transforms.dofn import DoFn, finished
from dicom_transfer.transforms.migrate_targets import DicomwebTarget, MigrationTarget, migration_target
from dicom_transfer.transforms.results import Transferred
from dicom_transfer.vocabulary import Stage

LOG = logging.getLogger(__name__)
VERIFY_RETRY_SECONDS = 1.0  # a store that indexes asynchronously gets one more look
RETRIEVAL_ERRORS = (DicomwebError, OSError)


@dataclasses.dataclass
class _Result:
    kind: str
    size: int = 0
    message: str = ""
    stage: Stage = Stage.STORE
    warned: bool = False  # stored, with a warning status (C-STORE 0xBxxx)


class _SeriesRun:
    """What one series' migration has spooled, decided and reported so far."""

    def __init__(self, plan: SeriesPlan, spool: str, target: tuple[str, str] | None = None) -> None:
        self.plan = plan
        self.spool = spool
        self.target = target or (plan.study, plan.series)  # the series' UIDs on the destination
        self.missing = frozenset(plan.missing)
        self.source_of: dict[str, str] = {}  # de-identified SOP Instance UID -> the source's
        self.mapping: list[MappingRow] = []
        self.deidentified: dict[str, int] = {}  # source SOP Instance UID -> de-identified size
        self.results: dict[str, _Result] = {sop: _Result(UNCHANGED) for sop in plan.present}
        self.spooled: set[str] = set()
        self.digests: dict[str, str] = {}
        self.stray: list[ErrorRecord] = []  # what the source sent unasked, named by its own UIDs

    def fail(self, sop: str, message: str, stage: Stage) -> None:
        self.results[sop] = _Result(FAILURE, message=message, stage=stage)

    def settled(self, sop: str) -> bool:
        return sop in self.spooled or sop in self.results

    def new_file(self):
        handle, path = tempfile.mkstemp(prefix=".part-", dir=self.spool)
        return path, os.fdopen(handle, "wb")


class _MigrateSeriesFn(DoFn):
    """((study, series), [(sop, whole), ...]) -> outcomes and failure records, one per instance."""

    def __init__(self, source: DicomwebClient | None, destination: DicomwebClient | DimseSettings, max_instances: int,
                 max_bytes: int, concurrency: int, verify_bytes: bool, dry_run: bool,
                 deid: DeidSettings | None = None) -> None:
        # None: a subclass retrieves from another kind of source (transforms.dimse_migrate)
        self.source_settings = source.settings if source is not None else None
        self.target: MigrationTarget = migration_target(destination)
        if verify_bytes and not self.target.verifies_bytes:
            raise ValueError(f"{self.target.protocol} destinations cannot be read back to compare bytes")
        self.max_instances = max_instances
        self.max_bytes = max_bytes
        self.concurrency = concurrency
        self.verify_bytes = verify_bytes
        self.dry_run = dry_run
        self.deid = deid
        self.counters = {kind: Metrics.counter(metrics.NAMESPACE, kind) for kind in (SUCCESS, UNCHANGED, DEIDENTIFIED)}
        self.bytes_written = Metrics.counter(metrics.NAMESPACE, metrics.BYTES_WRITTEN)
        self.warnings = Metrics.counter(metrics.NAMESPACE, metrics.DIMSE_WARNINGS)

    def setup(self) -> None:
        self.source = DicomwebClient(**self.source_settings) if self.source_settings is not None else None
        self.target.setup()
        self.pool = concurrent.futures.ThreadPoolExecutor(self.concurrency)  # STOW-RS requests, byte checks
        # Several series at once: one series' requests alone (a QIDO-RS, a WADO-RS answer, a few
        # STOW-RS batches) leave both servers idle much of the time.
        self.series_pool = concurrent.futures.ThreadPoolExecutor(self.concurrency)
        self.progress = ProgressLog("migrate")
        self.deidentifier = self.deid.deidentifier() if self.deid else None
        # The UID the destination holds for a source study, series or instance UID.
        self.rename = self.deidentifier.new_uid if self.deidentifier else same

    def teardown(self) -> None:
        for pool in (getattr(self, "pool", None), getattr(self, "series_pool", None)):
            if pool:
                pool.shutdown(wait=False)
        self.target.teardown()

    def start_bundle(self) -> None:
        self.running: collections.deque[concurrent.futures.Future] = collections.deque()

    def process(self, element: tuple[tuple[str, str], Iterable[tuple[str, bool]]]) -> Iterator:
        series, selected = element[0], list(element[1])
        self.progress.report("found", len({sop for sop, _ in selected}))  # the progress display's total
        self.running.append(self.series_pool.submit(self._migrate, (series, selected)))
        # At most ``concurrency`` series in flight (and their spools); results in order, counted
        # on this thread (Beam's metrics are per thread).
        while self.running and (len(self.running) > self.concurrency or self.running[0].done()):
            yield from self._report(self.running.popleft().result())

    def finish_bundle(self) -> Iterator:
        while self.running:
            for output in self._report(self.running.popleft().result()):
                yield finished(output)
        self.progress.flush()

    def _migrate(self, element: tuple[tuple[str, str], Iterable[tuple[str, bool]]]) -> _SeriesRun:
        """One series, on a thread of ``series_pool``: compare, move what is missing, verify."""
        (study, series), selected = element
        target = (self.rename(study), self.rename(series))
        try:
            held = self.target.held(*target)
        except self.target.errors as exc:
            run = _SeriesRun(plan_series(study, series, selected, ()), "", target)
            for sop in run.plan.wanted:
                run.fail(sop, f"cannot ask the destination which instances it holds: {exc}", Stage.COMPARE)
            return run
        plan = plan_series(study, series, selected, held, self.rename)
        run = _SeriesRun(plan, tempfile.mkdtemp(prefix="dicom-transfer-migrate-"), target)
        if self.deidentifier and plan.present:  # what the destination holds already is in the mapping table too
            run.mapping += [MappingRow("UID", study, target[0], "StudyInstanceUID"),
                            MappingRow("UID", series, target[1], "SeriesInstanceUID"),
                            *(MappingRow("UID", sop, self.rename(sop), "SOPInstanceUID") for sop in plan.present)]
        try:
            if plan.missing:
                self._transfer(run)
                self._verify(run)
        finally:
            shutil.rmtree(run.spool, ignore_errors=True)
        if self.dry_run:
            would = [r for r in run.results.values() if r.kind == SUCCESS]
            LOG.info("dry run: series %s: %d of %d instances would be migrated (%s), %d already there",
                     plan.identifier, len(would), len(plan.wanted), format_bytes(sum(r.size for r in would)),
                     len(plan.present))
        return run

    # -- retrieve from the source, store on the destination, overlapping ------------------------
    def _transfer(self, run: _SeriesRun) -> None:
        """Spooled instances go out in batches while the next ones arrive; at most
        ``concurrency`` requests in flight, so the spool stays bounded too."""
        batcher: RequestBatcher[ValidInstance] = RequestBatcher(self.max_instances, self.max_bytes)
        pending: collections.deque = collections.deque()
        for instance in self._retrieve(run):
            if full := batcher.add(instance):
                pending.append(self._submit(full))
            while len(pending) > self.concurrency:
                self._collect(pending.popleft(), run)
        if rest := batcher.flush():
            pending.append(self._submit(rest))
        while pending:
            self._collect(pending.popleft(), run)

    def _submit(self, group: list[ValidInstance]):
        if self.dry_run:  # nothing is sent: the spooled instance counts what would be
            done: concurrent.futures.Future = concurrent.futures.Future()
            done.set_result([(i, SUCCESS, "would be stored") for i in group])
            return done
        return self.pool.submit(self.target.send, group)

    def _collect(self, future: concurrent.futures.Future, run: _SeriesRun) -> None:
        for instance, kind, message in future.result():
            sop = run.source_of.get(instance.sop_uid, instance.sop_uid)
            if kind == WARNING:
                run.results[sop] = _Result(SUCCESS, instance.size, message, Stage.STORE, warned=True)
            else:
                run.results[sop] = _Result(kind, instance.size, message, Stage.STORE)
            os.unlink(instance.url)

    def _retrieve(self, run: _SeriesRun) -> Iterator[ValidInstance]:
        """The missing instances, spooled: the whole series in one answer when that pays, then
        one by one (with retries) whatever is still missing."""
        plan = run.plan
        if plan.fetch_whole_series:
            try:
                yield from self._spool(f"/studies/{plan.study}/series/{plan.series}", run, None, attempts=1)
            except RETRIEVAL_ERRORS as exc:
                LOG.warning("series %s: %s; retrieving what is missing instance by instance",
                            plan.identifier, exc)
        for sop in plan.missing:
            if run.settled(sop):
                continue
            path = f"/studies/{plan.study}/series/{plan.series}/instances/{sop}"
            try:
                yield from self._spool(path, run, sop, attempts=self._source().retry.attempts)
            except RETRIEVAL_ERRORS as exc:
                reason = "not found on the source" if getattr(exc, "status", None) == 404 else str(exc)
                run.fail(sop, f"cannot retrieve from the source: {reason}", Stage.RETRIEVE)
                continue
            if not run.settled(sop):
                run.fail(sop, "the source's answer did not contain this instance", Stage.RETRIEVE)

    def _source(self) -> DicomwebClient:
        if self.source is None:  # a subclass without a DICOMweb source retrieves otherwise
            raise TypeError(f"{type(self).__name__} has no DICOMweb source to retrieve from")
        return self.source

    def _spool(self, path: str, run: _SeriesRun, single: str | None, attempts: int) -> Iterator[ValidInstance]:
        for part, size in self._source().retrieve_to_files(path, run.new_file, "*", attempts):
            instance = self._accept(part, size, run, single)
            if instance is not None:
                yield instance

    def _accept(self, part: str, size: int, run: _SeriesRun, single: str | None) -> ValidInstance | None:
        """Validate one retrieved part and keep it in the spool if it is one of the missing."""
        plan = run.plan
        try:
            instance = validate_file(FileRef(part, size))
        except InvalidInstance as exc:
            if single is None:  # the one-by-one pass reports it, under its UID
                LOG.warning("series %s: the source sent an invalid instance: %s", plan.identifier, exc)
            else:
                run.fail(single, f"the source sent an invalid instance ({exc.check}): {exc}", Stage.VALIDATE)
            return None
        sop = instance.sop_uid
        if (instance.study_uid, instance.series_uid) != (plan.study, plan.series) or (
                single is not None and sop != single):
            where = f"{plan.identifier}/{single}" if single else plan.identifier
            if single is not None:
                run.fail(single, f"the source sent {instance.study_uid}/{instance.series_uid}/{sop} instead",
                         Stage.VALIDATE)
            else:
                run.stray.append(_record(f"{instance.study_uid}/{instance.series_uid}/{sop}",
                                         f"the source sent this instance when asked for {where}", Stage.VALIDATE))
            return None
        if sop not in run.missing or run.settled(sop):
            return None  # present already, or spooled from an earlier interrupted answer
        kept = os.path.join(run.spool, f"{len(run.spooled)}.dcm")
        os.replace(part, kept)
        run.spooled.add(sop)
        instance = instance._replace(url=kept, attributes=())
        if self.deidentifier:
            deidentified = self._deidentify(self.deidentifier, instance, run)
            if deidentified is None:
                return None
            instance = deidentified
        # the SHA-256 of the bytes sent: the manifest's checksum, and what --verify-bytes compares
        # (from the spool file just written, in the page cache: the source is not read twice)
        run.digests[sop] = sha256_of_url(instance.url)
        return instance

    def _deidentify(self, deidentifier: Deidentifier, instance: ValidInstance, run: _SeriesRun) -> ValidInstance | None:
        """The spooled instance de-identified (in the spool, named by its new UIDs), or ``None``
        and a failure record."""
        sop = instance.sop_uid
        try:
            staged, rows = deidentify_file(deidentifier, instance, run.spool)
        except (DeidentificationError, InvalidInstance) as exc:
            run.fail(sop, f"cannot de-identify: {exc}", Stage.DEIDENTIFY)
            return None
        except IO_ERRORS as exc:
            run.fail(sop, f"cannot de-identify: {error_text(exc)}", Stage.DEIDENTIFY)
            return None
        finally:
            os.unlink(instance.url)
        if (staged.study_uid, staged.series_uid, staged.sop_uid) != (*run.target, self.rename(sop)):
            os.unlink(staged.url)  # the comparison with the destination would never find it
            run.fail(sop, "the de-identified instance's UIDs are not the keyed pseudonyms of its "
                     "study, series and instance UIDs", Stage.DEIDENTIFY)
            return None
        run.source_of[staged.sop_uid] = sop
        run.mapping += rows
        run.deidentified[sop] = staged.size
        return staged._replace(attributes=())

    # -- verify ----------------------------------------------------------------------------------
    def _verify(self, run: _SeriesRun) -> None:
        """Every instance counted stored must now be on the destination (one QIDO-RS for the
        series, a second look after a pause if something is missing); with ``verify_bytes``,
        what was stored is retrieved again and compared by SHA-256."""
        stored = [sop for sop, result in run.results.items() if result.kind == SUCCESS]
        if self.dry_run or not stored:
            return
        try:
            missing = still_missing(stored, self.target.held(*run.target), self.rename)
            if missing:
                time.sleep(VERIFY_RETRY_SECONDS)
                missing = still_missing(missing, self.target.held(*run.target), self.rename)
        except self.target.errors as exc:
            missing = []
            for sop in stored:
                run.fail(sop, f"stored, but cannot verify that the destination holds it: {exc}", Stage.VERIFY)
        for sop in missing:
            run.fail(sop, f"{self.target.protocol} reported it stored, but the destination does not hold it",
                     Stage.VERIFY)
        if self.verify_bytes:
            self._verify_bytes(run, [sop for sop in stored if run.results[sop].kind == SUCCESS])

    def _verify_bytes(self, run: _SeriesRun, sops: list[str]) -> None:
        for sop, problem in zip(sops, self.pool.map(lambda s: self._bytes_problem(run, s), sops), strict=True):
            if problem:
                run.fail(sop, problem, Stage.VERIFY)

    def _bytes_problem(self, run: _SeriesRun, sop: str) -> str | None:
        path = "/studies/{}/series/{}/instances/{}".format(*run.target, self.rename(sop))
        if not isinstance(self.target, DicomwebTarget):  # only a DICOMweb target verifies_bytes
            raise TypeError(f"{type(self.target).__name__} cannot verify bytes")
        client = self.target.client
        digests: set[str] = set()  # a set: a retried answer yields its parts again
        try:
            for part, _ in client.retrieve_to_files(path, run.new_file, "*", client.retry.attempts):
                digests.add(sha256_of_url(part))
        except RETRIEVAL_ERRORS as exc:
            return f"stored, but cannot retrieve it again to compare its bytes: {exc}"
        if digests != {run.digests[sop]}:
            return (f"the destination returns other bytes than those sent (SHA-256 "
                    f"{', '.join(sorted(digests)) or 'nothing'} instead of {run.digests[sop]})")
        return None

    # -- report ----------------------------------------------------------------------------------
    def _report(self, run: _SeriesRun) -> Iterator:
        plan = run.plan
        for row in run.mapping:
            yield beam.pvalue.TaggedOutput(MAPPING, row)
        for sop in plan.wanted:
            result = run.results.get(sop) or _Result(FAILURE, message="not transferred", stage=Stage.STORE)
            identifier = f"{plan.identifier}/{sop}"
            if sop in run.deidentified:  # counted whatever became of it next, as in the other pipelines
                self.counters[DEIDENTIFIED].inc()
                yield beam.pvalue.TaggedOutput(OUTCOMES, Outcome(DEIDENTIFIED, run.deidentified[sop], identifier, ""))
            if result.kind == FAILURE:
                yield _failure(identifier, result.message, result.stage)
                continue
            self.counters[result.kind].inc()
            if result.warned:
                self.warnings.inc()
            if result.kind == SUCCESS and not self.dry_run:
                self.bytes_written.inc(result.size)
            self.progress.add(1, result.size if result.kind == SUCCESS else 0)
            yield beam.pvalue.TaggedOutput(OUTCOMES, Outcome(
                result.kind, result.size, identifier, self.target.location(*run.target, self.rename(sop)),
                *run.target, self.rename(sop), (("sha256", run.digests[sop]),) if sop in run.digests else ()))
        for record in run.stray:
            yield beam.pvalue.TaggedOutput(FAILURES, record)


def _record(identifier: str, message: str, stage: Stage) -> ErrorRecord:
    return ErrorRecord.create(identifier, message, stage)


def _failure(identifier: str, message: str, stage: Stage) -> beam.pvalue.TaggedOutput:
    return beam.pvalue.TaggedOutput(FAILURES, _record(identifier, message, stage))


class MigrateSeries(beam.PTransform):
    """Move grouped series (as :class:`ExpandToInstances` gives them) from one DICOMweb server
    to another, and verify.

    Per series: one paged QIDO-RS on the destination says which selected instances it holds
    (``unchanged``); only the others are retrieved from the source with WADO-RS
    (``transfer-syntax=*``: the stored bytes), parsed as they stream into spool files (memory
    stays bounded whatever the series), validated, and sent with batched STOW-RS requests
    (``max_instances``/``max_bytes``, ``concurrency`` in flight, split in halves when refused
    whole, retried with ``Retry-After``) while the next ones arrive; ``concurrency`` series are
    in flight per worker, sharing ``concurrency`` STOW-RS requests. Then one QIDO-RS checks
    that the destination holds every instance stored; ``verify_bytes`` also retrieves each
    again and compares SHA-256. Every instance that does not arrive is one failure record.
    With ``dry_run`` the missing instances are retrieved and counted, nothing is sent.

    With ``deid``, each retrieved instance is de-identified before it is sent; the comparison
    and the verification look for the keyed pseudonyms of the source's UIDs (computed from the
    key alone), so that a re-run finds what an earlier run stored. Reports name instances by
    the source's UIDs.

    With a PACS's :class:`DimseSettings` as ``destination``
    (:class:`~dicom_transfer.transforms.migrate_targets.PacsTarget`), what it holds is asked with
    an image-level C-FIND and the missing instances are sent with C-STORE, each in its own
    transfer syntax (never transcoded), a batch per pooled association; ``verify_bytes`` needs
    a DICOMweb destination.

    Returns :class:`~.results.Transferred`: ``outcomes``, ``failures`` and ``mapping`` (empty without ``deid``).

    Example::

        series = resources | ExpandToInstances(source)
        moved = series.instances | MigrateSeries(source, destination)
    """

    def __init__(self, source: DicomwebClient, destination: DicomwebClient | DimseSettings, max_instances: int = 32,
                 max_bytes: int = 32 << 20, concurrency: int = 4, verify_bytes: bool = False,
                 dry_run: bool = False, deid: DeidSettings | None = None) -> None:
        super().__init__()
        self.fn = _MigrateSeriesFn(source, destination, max_instances, max_bytes, concurrency,
                                   verify_bytes, dry_run, deid)

    def expand(self, series: beam.PCollection) -> Transferred:
        result = series | "RetrieveStoreVerify" >> beam.ParDo(self.fn).with_outputs(FAILURES, OUTCOMES, MAPPING)
        return Transferred(result[OUTCOMES], result[FAILURES], result[MAPPING])
