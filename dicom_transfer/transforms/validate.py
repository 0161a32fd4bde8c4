"""Read each file and keep it only if it is a complete, well-formed DICOM instance."""

from __future__ import annotations

import io
from collections.abc import Iterable

import apache_beam as beam
from apache_beam.metrics import Metrics

from dicom_transfer import metrics
from dicom_transfer.elements import FileRef, ValidInstance
from dicom_transfer.errors import FAILURES, IO_ERRORS, ErrorRecord, error_text
from dicom_transfer.io.files import local_path, open_url
from dicom_transfer.layout import other_than_uids
from dicom_transfer.part10 import InvalidInstance, open_for_validation, read_head, validate_part10
from dicom_transfer.progress import ProgressLog
from dicom_transfer.transforms.concurrency import DEFAULT_THREADS, BatchedIoFn, batched
from dicom_transfer.transforms.results import Found
from dicom_transfer.vocabulary import Stage

INSTANCES = "instances"
# Files up to this size are read in one call (and copied from memory); larger ones are walked
# from their first HEAD bytes, then with seeks (and copied without passing through Python).
LOCAL_IN_MEMORY = 64 << 10
REMOTE_IN_MEMORY = 64 << 10  # remote objects up to this size are fetched whole
REMOTE_BLOCK = 32 << 10  # otherwise in ranged reads of this size
HEAD = 32 << 10


def plain_value(value: object) -> object:
    """pydicom values as plain strings (or tuples of strings for multi-values)."""
    if isinstance(value, (str, int, float)):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return value.decode("ascii", "replace")
    if isinstance(value, Iterable):  # MultiValue
        return tuple(str(v) for v in value)
    return str(value)


def validate_file(ref: FileRef, keywords: Iterable[str] = ()) -> ValidInstance:
    """Validate the file ``ref`` points to.

    Raises
    ------
    InvalidInstance
        The file is not an acceptable instance.
    OSError
        The file cannot be read.
    """
    return read_and_validate(ref, keywords)[0]


def read_and_validate(ref: FileRef, keywords: Iterable[str] = ()) -> tuple[ValidInstance, bytes | None]:
    """Validate the file ``ref`` points to, and return its bytes too when it was read whole
    (a small file: one read), so that copying it needs no second read; ``None`` otherwise.

    Raises
    ------
    InvalidInstance
        The file is not an acceptable instance.
    OSError
        The file cannot be read.
    """
    local = local_path(ref.url) is not None
    # Remote objects are read in small ranges: the header, then seeks over the values.
    with open_url(ref.url, block_size=REMOTE_BLOCK, size=ref.size) as raw:
        stream = open_for_validation(raw, ref.size, LOCAL_IN_MEMORY if local else REMOTE_IN_MEMORY)
        data = stream.getvalue() if isinstance(stream, io.BytesIO) else None
        head = None if data is not None else read_head(raw, HEAD)
        header = validate_part10(stream, ref.size, keywords, head)
    instance = ValidInstance(
        ref.url, ref.size, header.study_uid, header.series_uid, header.sop_uid,
        header.transfer_syntax,
        tuple(sorted((k, plain_value(v)) for k, v in header.attributes.items())),
        ref.md5, source_version=ref.version,
    )
    return instance, data if data is not None and len(data) == ref.size else None


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
