"""Copy files to local disk in one step per file: read, validate, select, route and write.

Each file is written as soon as it is validated, so that outputs appear from the first
seconds of a run and an interrupted run keeps what it wrote; a file read whole to be
validated is written from those bytes, never read twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics

from dicom_transfer import metrics
from dicom_transfer.elements import OUTCOMES, FileRef, Outcome, instance_outcome
from dicom_transfer.errors import FAILURES, IO_ERRORS, ErrorRecord, error_text
from dicom_transfer.io.destination import Destination
from dicom_transfer.layout import Layout, LayoutError
from dicom_transfer.part10 import InvalidInstance
from dicom_transfer.resources import ResourceFilter
from dicom_transfer.transforms.concurrency import DEFAULT_THREADS, PooledFn, batched
from dicom_transfer.transforms.place import Placements, place_file
from dicom_transfer.transforms.results import Copied, Unmatched
from dicom_transfer.transforms.route import MATCHED, UnmatchedFilterLines, filter_file_selection
from dicom_transfer.transforms.validate import read_and_validate
from dicom_transfer.vocabulary import Stage


class _Copied:
    """What became of one file: whether it was valid, the filter-file lines that selected it,
    and its outcome or failure."""

    __slots__ = ("valid", "lines", "result")

    def __init__(self, valid: bool, result: Outcome | ErrorRecord, lines: Iterable[str] = ()) -> None:
        self.valid, self.result, self.lines = valid, result, lines


class _CopyFn(PooledFn):
    """Copies one file (one thread), or a batch of them (``threads`` at once)."""

    def __init__(self, destination_url: str, layout: Layout, run: str, overwrite: bool, dry_run: bool,
                 threads: int) -> None:
        super().__init__(threads)
        self.destination_url = destination_url
        self.layout = layout
        self.keywords = layout.attribute_keywords
        self.run = run
        self.overwrite = overwrite
        self.dry_run = dry_run
        self.valid = Metrics.counter(metrics.NAMESPACE, metrics.INSTANCES_VALID)
        self.filtered = Metrics.counter(metrics.NAMESPACE, metrics.FILTERED)
        self.placements = Placements(dry_run)

    def setup(self) -> None:
        super().setup()
        self.destination = Destination(self.destination_url)
        self.placements.start("copy" if not self.dry_run else "dry-run")

    def process(self, element: FileRef | list[FileRef], selection: ResourceFilter | None = None) -> Iterator:
        # Metrics on the bundle's thread, where the runner collects them
        for copied in self.each(lambda ref: self.copy(ref, selection), element):
            if copied.valid:
                self.valid.inc()
            for line in copied.lines:
                yield beam.pvalue.TaggedOutput(MATCHED, line)
            if isinstance(copied.result, Outcome) and copied.result.kind == metrics.FILTERED:
                self.filtered.inc()
                yield beam.pvalue.TaggedOutput(OUTCOMES, copied.result)
            else:
                yield self.placements.output(copied.result)

    def copy(self, ref: FileRef, selection: ResourceFilter | None) -> _Copied:
        """Validate, select, route and write the file at ``ref`` (thread-safe; no Metrics)."""
        try:
            instance, data = read_and_validate(ref, self.keywords)
        except InvalidInstance as exc:
            return _Copied(False, ErrorRecord.create(ref.url, f"invalid DICOM ({exc.check}): {exc}", Stage.VALIDATE))
        except IO_ERRORS as exc:
            return _Copied(False, ErrorRecord.create(ref.url, f"cannot read file: {error_text(exc)}", Stage.READ))
        lines: list[str] = []
        if selection is not None:
            selecting = selection.selecting(instance.study_uid, instance.series_uid, instance.sop_uid)
            if not selecting:
                return _Copied(True, instance_outcome(metrics.FILTERED, instance, ""))
            lines = [path.filter_line for path in selecting]
        try:
            relative = self.layout.relative_path(instance.values())
        except LayoutError as exc:
            return _Copied(True, ErrorRecord.create(instance.url, str(exc), Stage.ROUTE, uids=instance.uids), lines)
        target = self.destination.url_of(relative)
        kind = place_file(self.destination, relative, instance.url, instance.size, source=instance.url,
                          uids=instance.uids, run=self.run, overwrite=self.overwrite, dry_run=self.dry_run,
                          source_md5=instance.md5, data=data)
        if isinstance(kind, ErrorRecord):
            return _Copied(True, kind, lines)
        # The manifest's checksum: of the bytes this worker read, validated and wrote (or compared);
        # a larger file goes from file to file in the kernel (sendfile), unseen, so it has none.
        sha256 = hashlib.sha256(data).hexdigest() if data is not None and not self.dry_run else None
        return _Copied(True, instance_outcome(kind, instance, target, sha256=sha256), lines)


class CopyFiles(beam.PTransform):
    """Copy :class:`FileRef` inputs below the local folder ``destination_url``, placed by ``layout``.

    Each file is read and validated as :class:`ReadAndValidate` does, selected by the optional
    filter file as :class:`FilterInstances` does, and written as :class:`WriteInstances` writes
    to local disk (atomically; the first input written to a path stays, labelled with ``run``),
    all in one step per file: it is written as soon as it is validated, from the bytes read to
    validate it. ``threads`` files are copied at once per worker.

    Returns :class:`~.results.Copied`: ``outcomes`` (:class:`Outcome`: ``success``, ``unchanged``,
    ``filtered``), ``failures`` and, with a filter file, ``unmatched`` (its lines that
    selected nothing).

    Example::

        expanded = p | ExpandPatterns(["/data/in/**.dcm"])
        copied = expanded.files | CopyFiles("/data/out", Layout.parse("uid"), run="run-1")
    """

    def __init__(self, destination_url: str, layout: Layout, *, run: str = "", filter_file: str | None = None,
                 strict: bool = False, overwrite: bool = False, dry_run: bool = False,
                 threads: int = DEFAULT_THREADS) -> None:
        super().__init__()
        self.fn = _CopyFn(destination_url, layout, run, overwrite, dry_run, threads)
        self.filter_file = filter_file
        self.strict = strict
        self.threads = threads

    def expand(self, files: beam.PCollection) -> Copied:
        side, selection = [], None
        if self.filter_file:
            selection = filter_file_selection(files.pipeline, self.filter_file)
            side.append(beam.pvalue.AsSingleton(selection))
        if self.threads > 1:
            files = files | "Batch" >> batched(self.threads)
        copied = files | "Copy" >> beam.ParDo(self.fn, *side).with_outputs(FAILURES, MATCHED, OUTCOMES)
        if selection is None or self.filter_file is None:
            return Copied(copied[OUTCOMES], copied[FAILURES])
        lines: Unmatched = copied[MATCHED] | "Unmatched" >> UnmatchedFilterLines(
            selection, self.filter_file, self.strict)
        failures = (copied[FAILURES], lines.failures) | "Failures" >> beam.Flatten()
        return Copied(copied[OUTCOMES], failures, lines.unmatched)
