"""Write routed instances to the destination, exactly once and never silently overwriting."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from dicom_transfer import metrics
from dicom_transfer.errors import FAILURES, IO_ERRORS, ErrorRecord, error_text
from dicom_transfer.io.destination import PLACED, Destination, ExistsWithOtherContent
from dicom_transfer.progress import ProgressLog
from dicom_transfer.transforms.concurrency import DEFAULT_THREADS, BatchedIoFn, batched
from dicom_transfer.transforms.duplicates import ResolveDuplicates
from dicom_transfer.transforms.outcomes import OUTCOMES, Outcome
from dicom_transfer.transforms.validate import ValidInstance


class _WriteFn(BatchedIoFn):
    def __init__(self, destination_url: str, overwrite: bool, dry_run: bool, threads: int) -> None:
        super().__init__(threads)
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

    def work(self, element: tuple[str, ValidInstance]) -> list:
        relative, instance = element
        target = self.destination.url_of(relative)
        try:
            kind, _ = self.destination.place(relative, instance.url, instance.size, overwrite=self.overwrite,
                                             dry_run=self.dry_run, source_md5=instance.md5)
        except ExistsWithOtherContent:
            return [self._failure(instance.url, f"{target} exists with different content "
                                  "(use --overwrite to replace it)")]
        except IO_ERRORS as exc:
            return [self._failure(instance.url, f"cannot write {target}: {error_text(exc)}")]
        return [beam.pvalue.TaggedOutput(OUTCOMES, Outcome(kind, instance.size, instance.url, target))]

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
    def _failure(identifier: str, message: str) -> beam.pvalue.TaggedOutput:
        return beam.pvalue.TaggedOutput(FAILURES, ErrorRecord.create(identifier, message, "write"))


class WriteInstances(beam.PTransform):
    """Write ``(relative_path, ValidInstance)`` pairs below ``destination_url``.

    Instances are first grouped by output path (:class:`ResolveDuplicates`), so
    that duplicates are decided deterministically. An existing output with the
    same bytes is ``unchanged``; with different bytes it is a failure unless
    ``overwrite``. ``dry_run`` decides everything
    but writes nothing.

    Returns a dict with ``outcomes`` (:class:`Outcome`) and ``failures``.

    Example::

        written = routed | WriteInstances("gs://bucket/out")
    """

    def __init__(self, destination_url: str, overwrite: bool = False, dry_run: bool = False,
                 threads: int = DEFAULT_THREADS) -> None:
        super().__init__()
        self.destination_url = destination_url
        self.overwrite = overwrite
        self.dry_run = dry_run
        self.threads = threads

    def expand(self, routed: beam.PCollection) -> dict[str, beam.PCollection]:
        resolved = routed | "ResolveDuplicates" >> ResolveDuplicates(stage="write")
        written = (
            resolved["unique"]
            | "Batch" >> batched(self.threads)
            | "Write" >> beam.ParDo(
                _WriteFn(self.destination_url, self.overwrite, self.dry_run, self.threads)
            ).with_outputs(FAILURES, OUTCOMES)
        )
        outcomes = (resolved[OUTCOMES], written[OUTCOMES]) | "Outcomes" >> beam.Flatten()
        failures = (resolved[FAILURES], written[FAILURES]) | "Failures" >> beam.Flatten()
        return {OUTCOMES: outcomes, FAILURES: failures}
