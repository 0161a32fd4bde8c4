"""Copy files to local disk in one step per file: read, validate, select, route and write.

Each file is written as soon as it is validated, so that outputs appear from the first
seconds of a run and an interrupted run keeps what it wrote; a file read whole to be
validated is written from those bytes, never read twice.
"""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics

from dicom_transfer import metrics
from dicom_transfer.elements import OUTCOMES, FileRef, Outcome
from dicom_transfer.errors import FAILURES
from dicom_transfer.io.copying import Copied, FileCopier
from dicom_transfer.layout import Layout
from dicom_transfer.resources import ResourceFilter
from dicom_transfer.transforms.concurrency import DEFAULT_THREADS, PooledFn, batched
from dicom_transfer.transforms.place import Placements
from dicom_transfer.transforms.results import Copied as CopiedFiles
from dicom_transfer.transforms.results import Unmatched
from dicom_transfer.transforms.route import MATCHED, UnmatchedFilterLines, filter_file_selection


class _CopyFn(PooledFn):
    """Copies one file (one thread), or a batch of them (``threads`` at once, or in ``processes``
    worker processes)."""

    def __init__(self, copier: FileCopier, dry_run: bool, threads: int, processes: int = 1) -> None:
        super().__init__(threads, processes)
        self.copier = copier
        self.valid = Metrics.counter(metrics.NAMESPACE, metrics.INSTANCES_VALID)
        self.filtered = Metrics.counter(metrics.NAMESPACE, metrics.FILTERED)
        self.placements = Placements(dry_run)
        self.dry_run = dry_run

    def setup(self) -> None:
        super().setup()
        self.placements.start("copy" if not self.dry_run else "dry-run")

    def process(self, element: FileRef | list[FileRef], selection: ResourceFilter | None = None) -> Iterator:
        if self.workers is None:  # the workers, forked on first use, get the filter file's selection
            self.copier.selection = selection
        for copied in self.each_ahead(lambda ref: self.copier.copy(ref, selection), element, "copy_all"):
            yield from self._outputs(copied)

    def finish_bundle(self) -> Iterator:
        yield from self.finish_ahead(self._outputs)

    def _outputs(self, copied: Copied) -> Iterator:
        # Metrics on the bundle's thread, where the runner collects them
        if copied.valid:
            self.valid.inc()
        for line in copied.lines:
            yield beam.pvalue.TaggedOutput(MATCHED, line)
        if isinstance(copied.result, Outcome) and copied.result.kind == metrics.FILTERED:
            self.filtered.inc()
            yield beam.pvalue.TaggedOutput(OUTCOMES, copied.result)
        else:
            yield self.placements.output(copied.result)

    def copy_all(self, refs: list[FileRef]) -> list[Copied]:  # in a worker process
        return self.copier.copy_all(refs)


class CopyFiles(beam.PTransform):
    """Copy :class:`FileRef` inputs below the local folder ``destination_url``, placed by ``layout``.

    Each file is read and validated as :class:`ReadAndValidate` does, selected by the optional
    filter file as :class:`FilterInstances` does, and written as :class:`WriteInstances` writes
    to local disk (atomically; the first input written to a path stays, labelled with ``run``),
    all in one step per file: it is written as soon as it is validated, from the bytes read to
    validate it. ``threads`` files are copied at once per worker; with ``processes`` > 1, batches
    of files are copied by that many processes forked from the worker
    (:class:`~dicom_transfer.io.processes.WorkerProcesses`: for a runner whose workers are threads
    of one process, the DirectRunner in-process).

    Returns :class:`~.results.Copied`: ``outcomes`` (:class:`Outcome`: ``success``, ``unchanged``,
    ``filtered``), ``failures`` and, with a filter file, ``unmatched`` (its lines that
    selected nothing).

    Example::

        expanded = p | ExpandPatterns(["/data/in/**.dcm"])
        copied = expanded.files | CopyFiles("/data/out", Layout.parse("uid"), run="run-1")
    """

    def __init__(self, destination_url: str, layout: Layout, *, run: str = "", filter_file: str | None = None,
                 strict: bool = False, overwrite: bool = False, dry_run: bool = False,
                 threads: int = DEFAULT_THREADS, processes: int = 1) -> None:
        super().__init__()
        copier = FileCopier(destination_url, layout, run, overwrite, dry_run)
        self.fn = _CopyFn(copier, dry_run, threads, processes)
        self.filter_file = filter_file
        self.strict = strict
        self.threads = threads
        self.processes = processes

    def expand(self, files: beam.PCollection) -> CopiedFiles:
        side, selection = [], None
        if self.filter_file:
            selection = filter_file_selection(files.pipeline, self.filter_file)
            side.append(beam.pvalue.AsSingleton(selection))
        if self.threads > 1 or self.processes > 1:
            files = files | "Batch" >> batched(self.threads, self.processes)
        copied = files | "Copy" >> beam.ParDo(self.fn, *side).with_outputs(FAILURES, MATCHED, OUTCOMES)
        if selection is None or self.filter_file is None:
            return CopiedFiles(copied[OUTCOMES], copied[FAILURES])
        lines: Unmatched = copied[MATCHED] | "Unmatched" >> UnmatchedFilterLines(
            selection, self.filter_file, self.strict)
        failures = (copied[FAILURES], lines.failures) | "Failures" >> beam.Flatten()
        return CopiedFiles(copied[OUTCOMES], failures, lines.unmatched)
