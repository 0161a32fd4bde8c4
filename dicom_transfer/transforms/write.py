"""Write routed instances to the destination, exactly once and never silently overwriting.

Local disk: each instance is written as soon as it arrives; when several inputs claim one
output path, the first one written stays (the atomic no-replace link decides) and each other
one is ``unchanged`` (same bytes) or a failure naming both inputs. Object stores: instances are
grouped by output directory, which is listed once (see :class:`WriteInstances`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics

from dicom_transfer import metrics
from dicom_transfer.elements import OUTCOMES, ValidInstance, instance_outcome
from dicom_transfer.errors import FAILURES, IO_ERRORS, ErrorRecord, error_text
from dicom_transfer.io.destination import (
    ABSENT,
    PLACED,
    Destination,
    Existing,
    remove_url,
)
from dicom_transfer.io.files import scheme_of
from dicom_transfer.io.instances import place_file
from dicom_transfer.progress import ProgressLog
from dicom_transfer.transforms.concurrency import DEFAULT_THREADS, BatchedIoFn, batched
from dicom_transfer.transforms.dofn import DoFn
from dicom_transfer.transforms.duplicates import UNIQUE, keep_one
from dicom_transfer.transforms.results import Written
from dicom_transfer.vocabulary import Stage

LOG = logging.getLogger(__name__)


class _WriteFn(BatchedIoFn):
    def __init__(self, destination_url: str, overwrite: bool, dry_run: bool, threads: int, run: str = "") -> None:
        super().__init__(threads)
        self.run = run
        self.destination_url = destination_url
        self.overwrite = overwrite
        self.dry_run = dry_run
        self.success = Metrics.counter(metrics.NAMESPACE, metrics.SUCCESS)
        self.unchanged = Metrics.counter(metrics.NAMESPACE, metrics.UNCHANGED)
        self.bytes_written = Metrics.counter(metrics.NAMESPACE, metrics.BYTES_WRITTEN)

    def setup(self) -> None:
        super().setup()
        self.destination = Destination(self.destination_url)
        self.progress = ProgressLog("write" if not self.dry_run else "dry-run")

    def work(self, element: tuple[str, ValidInstance] | tuple[str, ValidInstance, Existing | None]) -> list:
        relative, instance = element[:2]
        existing = element[2] if len(element) > 2 else None
        staged = instance.origin is not None  # a file this run made: moved into place, never left behind
        try:
            kind = place_file(self.destination, relative, instance.url, instance.size, source=instance.source,
                              uids=instance.uids, run=self.run, overwrite=self.overwrite, dry_run=self.dry_run,
                              source_md5=instance.md5, existing=existing, move=staged)
        finally:
            if staged:
                remove_url(instance.url)
        if isinstance(kind, ErrorRecord):
            return [beam.pvalue.TaggedOutput(FAILURES, kind)]
        return [beam.pvalue.TaggedOutput(OUTCOMES, instance_outcome(
            kind, instance, self.destination.url_of(relative),
            verified_md5=not self.destination.local and not self.dry_run))]

    def account(self, output: beam.pvalue.TaggedOutput) -> None:
        if output.tag != OUTCOMES:
            return
        outcome = output.value
        if outcome.kind == PLACED:
            self.success.inc()
            if not self.dry_run:
                self.bytes_written.inc(outcome.size)
            self.progress.add(1, outcome.size)
        else:
            self.unchanged.inc()
            self.progress.add(1, 0)

    @staticmethod
    def _failure(instance: ValidInstance, message: str) -> beam.pvalue.TaggedOutput:
        return beam.pvalue.TaggedOutput(FAILURES, ErrorRecord.create(
            instance.source, message, Stage.WRITE, uids=instance.uids))


def _by_directory(element: tuple[str, ValidInstance]) -> tuple[str, tuple[str, ValidInstance]]:
    return element[0].rpartition("/")[0], element


class _ResolveInDirectoryFn(DoFn):
    """One output directory of an object store: list it once, keep one instance per output
    path (:func:`keep_one`), and pass on what the listing says about that path, so that
    writing needs no existence request per instance and re-runs need none at all."""

    def __init__(self, destination_url: str) -> None:
        self.destination_url = destination_url
        self.unchanged = Metrics.counter(metrics.NAMESPACE, metrics.UNCHANGED)

    def setup(self) -> None:
        self.destination = Destination(self.destination_url)

    def process(self, element: tuple[str, Iterable[tuple[str, ValidInstance]]]) -> Iterator:
        directory, items = element
        claims: dict[str, list[ValidInstance]] = defaultdict(list)
        for relative, instance in items:
            claims[relative].append(instance)
        try:
            listed: dict[str, Existing] | None = {  # only what is claimed: a directory may hold millions
                relative: entry for relative, entry in self.destination.listing(directory) if relative in claims}
        except IO_ERRORS as exc:  # each instance then asks the store for itself
            LOG.warning("cannot list %s (%s); checking its outputs one by one",
                        self.destination.url_of(directory), error_text(exc))
            listed = None
        for relative in sorted(claims):
            for output in keep_one(relative, claims[relative], Stage.WRITE, self.unchanged):
                if isinstance(output, beam.pvalue.TaggedOutput):
                    yield output
                else:
                    yield (*output, None if listed is None else listed.get(relative, ABSENT))


class WriteInstances(beam.PTransform):
    """Write ``(relative_path, ValidInstance)`` pairs below ``destination_url``.

    On local disk each instance is written as it arrives: the first one written to a path
    stays (an atomic no-replace link), and carries the input it came from and the ``run``
    that wrote it, so that a later input claiming that path with other bytes is a failure
    naming both, never an overwrite (not even with ``overwrite``, which replaces outputs of
    earlier runs only). For an object store instances are grouped by output directory,
    each directory is listed once, duplicates are decided in the group (the smallest source
    URL wins) and what exists (size, MD5) is decided from that listing. An existing output
    with the same bytes is ``unchanged``; with different bytes it is a failure unless
    ``overwrite``. ``dry_run`` decides everything but writes nothing.

    Returns :class:`~.results.Written`: ``outcomes`` (:class:`Outcome`) and ``failures``.

    Example::

        written = routed | WriteInstances("gs://bucket/out")
    """

    def __init__(self, destination_url: str, overwrite: bool = False, dry_run: bool = False,
                 threads: int = DEFAULT_THREADS, run: str = "") -> None:
        super().__init__()
        self.destination_url = destination_url
        self.overwrite = overwrite
        self.dry_run = dry_run
        self.threads = threads
        self.run = run

    def expand(self, routed: beam.PCollection) -> Written:
        write = _WriteFn(self.destination_url, self.overwrite, self.dry_run, self.threads, self.run)
        if scheme_of(self.destination_url) is None:  # local disk: written as they come, decided by the link
            written = routed | "Batch" >> batched(self.threads) | "Write" >> beam.ParDo(write).with_outputs(
                FAILURES, OUTCOMES)
            return Written(written[OUTCOMES], written[FAILURES])
        # an object store: one listing per output directory instead of a request per instance
        resolved = (
            routed
            | "KeyByDirectory" >> beam.Map(_by_directory)
            | "GroupByDirectory" >> beam.GroupByKey()
            | "ResolveAgainstListing" >> beam.ParDo(_ResolveInDirectoryFn(self.destination_url)).with_outputs(
                FAILURES, OUTCOMES, main=UNIQUE)
        )
        written = (
            resolved[UNIQUE]
            | "Rebalance" >> beam.Reshuffle()  # one directory may hold everything
            | "Batch" >> batched(self.threads)
            | "Write" >> beam.ParDo(write).with_outputs(FAILURES, OUTCOMES)
        )
        outcomes = (resolved[OUTCOMES], written[OUTCOMES]) | "Outcomes" >> beam.Flatten()
        failures = (resolved[FAILURES], written[FAILURES]) | "Failures" >> beam.Flatten()
        return Written(outcomes, failures)
