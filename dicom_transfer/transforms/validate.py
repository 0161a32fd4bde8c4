"""Read each file and keep it only if it is a complete, well-formed DICOM instance."""

from __future__ import annotations

from collections.abc import Iterable

import apache_beam as beam
from apache_beam.metrics import Metrics

from dicom_transfer import metrics
from dicom_transfer.elements import FileRef, ValidInstance
from dicom_transfer.errors import FAILURES, IO_ERRORS, ErrorRecord, error_text
from dicom_transfer.io.instances import validate_file
from dicom_transfer.layout import other_than_uids
from dicom_transfer.part10 import InvalidInstance
from dicom_transfer.progress import ProgressLog
from dicom_transfer.transforms.concurrency import DEFAULT_THREADS, BatchedIoFn, batched
from dicom_transfer.transforms.results import Found
from dicom_transfer.vocabulary import Stage

INSTANCES = "instances"


class _ValidateFn(BatchedIoFn):
    def __init__(self, keywords: tuple[str, ...], threads: int) -> None:
        super().__init__(threads)
        self.keywords = keywords
        self.valid = Metrics.counter(metrics.NAMESPACE, metrics.INSTANCES_VALID)

    def setup(self) -> None:
        super().setup()
        self.progress = ProgressLog("read+validate")

    def work(self, ref: FileRef) -> list:
        try:
            return [validate_file(ref, self.keywords)]
        except InvalidInstance as exc:
            return [beam.pvalue.TaggedOutput(FAILURES, ErrorRecord.create(
                ref.url, f"invalid DICOM ({exc.check}): {exc}", Stage.VALIDATE))]
        except IO_ERRORS as exc:
            return [beam.pvalue.TaggedOutput(FAILURES, ErrorRecord.create(
                ref.url, f"cannot read file: {error_text(exc)}", Stage.READ))]

    def account(self, output) -> None:
        if isinstance(output, ValidInstance):
            self.valid.inc()
            self.progress.add(1, output.size)
        else:
            self.progress.add(1, 0)

    def teardown(self) -> None:
        super().teardown()
        if getattr(self, "progress", None) and self.progress.count:
            self.progress.log()


class ReadAndValidate(beam.PTransform):
    """Validate :class:`FileRef` inputs as DICOM Part 10 instances.

    Checks the preamble and ``DICM``, the file meta information, that every
    element's declared length fits in the file (truncation), and that the
    Study, Series and SOP Instance UIDs are valid. Reads headers only; pixel
    data is skipped, never loaded. ``threads`` files are read at once per worker.

    Returns :class:`~.results.Found`: ``instances`` (:class:`ValidInstance`) and ``failures``.

    Example::

        checked = files | ReadAndValidate(keywords=["PatientID"])
        checked.instances | RouteToLayout(layout)
    """

    def __init__(self, keywords: Iterable[str] = (), threads: int = DEFAULT_THREADS) -> None:
        super().__init__()
        self.keywords = other_than_uids(keywords)
        self.threads = threads

    def expand(self, files: beam.PCollection) -> Found:
        result = (
            files
            | "Batch" >> batched(self.threads)
            | "Validate" >> beam.ParDo(_ValidateFn(self.keywords, self.threads)).with_outputs(
                FAILURES, main=INSTANCES)
        )
        return Found(result[INSTANCES], result[FAILURES])
