"""De-identify files to local disk in one step per file: read, validate, de-identify, route, write.

What :class:`ReadAndValidate`, :class:`Deidentify`, :class:`RouteToLayout` and
:class:`WriteInstances` do in four steps, done in one for a local destination: each input is
walked once (the walk that validates it also says where its elements are, for the rewrite), its
pixel data goes from file to file in the kernel, and the de-identified file is moved into place
as soon as it is written. The failure records, outcomes and mapping rows are those of the four
steps.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import apache_beam as beam
from apache_beam.metrics import Metrics

from dicom_transfer import metrics
from dicom_transfer.deid.rewrite import DeidentificationError
from dicom_transfer.elements import OUTCOMES, FileRef, Outcome, ValidInstance, instance_outcome
from dicom_transfer.errors import FAILURES, IO_ERRORS, ErrorRecord, error_text
from dicom_transfer.io.atomic import open_unnamed
from dicom_transfer.io.destination import Destination, remove_local
from dicom_transfer.io.files import local_path, open_url
from dicom_transfer.io.instances import HEAD, REMOTE_BLOCK, place_file
from dicom_transfer.layout import Layout, LayoutError
from dicom_transfer.part10 import InvalidInstance, read_head, validate_and_map
from dicom_transfer.transforms.concurrency import DEFAULT_THREADS, PooledFn, batched
from dicom_transfer.transforms.deidentify import (
    DEIDENTIFIED,
    MAPPING,
    SEEN_ROWS,
    DeidSettings,
    MappingRow,
    rewrite_checked,
    staged_name,
)
from dicom_transfer.transforms.place import Placements
from dicom_transfer.transforms.results import Transferred
from dicom_transfer.vocabulary import Stage


class _Done:
    """What became of one file: whether it was valid, its outcome or failure, and (de-identified)
    its ``deidentified`` outcome and mapping rows."""

    __slots__ = ("valid", "result", "deidentified", "rows")

    def __init__(self, valid: bool, result: Outcome | ErrorRecord, deidentified: Outcome | None = None,
                 rows: Iterable[MappingRow] = ()) -> None:
        self.valid, self.result, self.deidentified, self.rows = valid, result, deidentified, rows


class _DeidentifyFilesFn(PooledFn):
    """De-identifies and writes one file (one thread), or a batch of them (``threads`` at once, or
    in ``processes`` worker processes)."""

    def __init__(self, settings: DeidSettings, destination_url: str, staging: str, layout: Layout, run: str,
                 overwrite: bool, dry_run: bool, threads: int, mapping: bool, processes: int = 1) -> None:
        super().__init__(threads, processes)
        self.settings = settings
        self.destination_url = destination_url
        self.staging = staging
        self.layout = layout
        # the layout's other attributes, as de-identified (the UIDs come with every rewrite)
        self.keywords = layout.attribute_keywords
        self.run = run
        self.overwrite = overwrite
        self.dry_run = dry_run
        self.mapping = mapping
        self.valid = Metrics.counter(metrics.NAMESPACE, metrics.INSTANCES_VALID)
        self.deidentified = Metrics.counter(metrics.NAMESPACE, DEIDENTIFIED)
        self.placements = Placements(dry_run)

    def setup(self) -> None:
        super().setup()
        self.deidentifier = self.settings.deidentifier()
        self.destination = Destination(self.destination_url)
        self.staging_path = local_path(self.staging) or self.staging  # the destination is local
        os.makedirs(self.staging_path, exist_ok=True)
        self.placements.start("deidentify" if not self.dry_run else "dry-run")

    def start_bundle(self) -> None:
        self.seen: set[MappingRow] = set()  # each row once per bundle, as Deidentify sends them

    def process(self, element: FileRef | list[FileRef]) -> Iterator:
        for done in self.each_ahead(self.deidentify, element, "deidentify_all"):
            yield from self._outputs(done)

    def finish_bundle(self) -> Iterator:
        yield from self.finish_ahead(self._outputs)

    def _outputs(self, done: _Done) -> Iterator:
        # Metrics on the bundle's thread, where the runner collects them
        if done.valid:
            self.valid.inc()
        if done.deidentified is not None:
            self.deidentified.inc()
            yield from self._rows(done.rows)
            yield beam.pvalue.TaggedOutput(OUTCOMES, done.deidentified)
        yield self.placements.output(done.result)

    def _rows(self, rows: Iterable[MappingRow]) -> Iterator[beam.pvalue.TaggedOutput]:
        for row in rows:
            if row in self.seen:
                continue
            if len(self.seen) >= SEEN_ROWS:
                self.seen.clear()
            self.seen.add(row)
            yield beam.pvalue.TaggedOutput(MAPPING, row)

    def deidentify_all(self, refs: list[FileRef]) -> list[_Done]:  # in a worker process
        return [self.deidentify(ref) for ref in refs]

    def deidentify(self, ref: FileRef) -> _Done:
        """Validate, de-identify, route and write the file at ``ref`` (thread-safe; no Metrics)."""
        try:
            with open_url(ref.url, block_size=REMOTE_BLOCK, size=ref.size) as source:
                head = read_head(source, HEAD)
                try:
                    header, elements = validate_and_map(source, ref.size, head)
                except InvalidInstance as exc:
                    return _Done(False, ErrorRecord.create(ref.url, f"invalid DICOM ({exc.check}): {exc}",
                                                           Stage.VALIDATE))
                instance = ValidInstance(ref.url, ref.size, header.study_uid, header.series_uid, header.sop_uid,
                                         header.transfer_syntax, (), ref.md5, source_version=ref.version)
                with contextlib.ExitStack() as stack:
                    try:
                        out, url, unnamed = stack.enter_context(self._output(ref.url))
                        staged, rows = rewrite_checked(self.deidentifier, instance, source, out, url,
                                                       self.keywords, (header.transfer_syntax, elements), head)
                    except (DeidentificationError, InvalidInstance) as exc:
                        return _Done(True, ErrorRecord.create(ref.url, f"cannot de-identify: {exc}",
                                                              Stage.DEIDENTIFY))
                    except IO_ERRORS as exc:  # making the new file too
                        return _Done(True, ErrorRecord.create(ref.url, f"cannot de-identify: {error_text(exc)}",
                                                              Stage.DEIDENTIFY))
                    result = self.place(staged, unnamed)
        except IO_ERRORS as exc:
            return _Done(False, ErrorRecord.create(ref.url, f"cannot read file: {error_text(exc)}", Stage.READ))
        return _Done(True, result, Outcome(DEIDENTIFIED, staged.size, ref.url, ""), rows if self.mapping else ())

    @contextlib.contextmanager
    def _output(self, source_url: str) -> Iterator[tuple[BinaryIO, str, int | None]]:
        """A new file on the destination's file system for the de-identified bytes: unnamed
        (linked into place once complete; nothing is left of it otherwise) where the system
        allows it, else named in the staging folder. Yields it open, its path and its descriptor
        if it is unnamed."""
        fd = open_unnamed(self.staging_path)
        if fd is not None:
            with os.fdopen(fd, "w+b") as out:
                yield out, f"/proc/self/fd/{fd}", fd
            return
        path = os.path.join(self.staging_path, staged_name(source_url))
        try:
            with open(path, "w+b") as out:
                yield out, path, None
        finally:
            remove_local(path)

    def place(self, staged: ValidInstance, unnamed: int | None) -> Outcome | ErrorRecord:
        """Put the de-identified file into place by its new UIDs (as :class:`WriteInstances` does)."""
        try:
            relative = self.layout.relative_path(staged.values())
        except LayoutError as exc:
            return ErrorRecord.create(staged.source, str(exc), Stage.ROUTE)
        kind = place_file(self.destination, relative, staged.url, staged.size, source=staged.source,
                          uids=staged.uids, run=self.run, overwrite=self.overwrite, dry_run=self.dry_run, move=True,
                          unnamed=unnamed)
        if isinstance(kind, ErrorRecord):
            return kind
        return instance_outcome(kind, staged, self.destination.url_of(relative))


class DeidentifyFiles(beam.PTransform):
    """De-identify :class:`FileRef` inputs into the local folder ``destination_url``, placed by
    ``layout`` from their new UIDs, in one step per file.

    Each file is validated as :class:`ReadAndValidate` does (in the same walk that finds its
    elements for the rewrite), de-identified as :class:`Deidentify` does (into ``staging``, on
    the destination's file system) and moved into place as :class:`WriteInstances` does on local
    disk (the first input written to a path stays, labelled with ``run``). ``threads`` files are
    worked on at once per worker, or batches of them by ``processes`` processes forked from it
    (for the DirectRunner in-process, as :class:`CopyFiles`).

    Returns a :class:`Transferred`: ``outcomes`` (:class:`Outcome`: ``success`` or ``unchanged``,
    and one ``deidentified`` per de-identified instance), ``failures`` (identified by the input's
    URL only) and ``mapping`` (:class:`MappingRow`, each at least once; none with ``mapping=False``).

    Example::

        expanded = p | ExpandPatterns(["/data/in/**.dcm"])
        done = expanded["files"] | DeidentifyFiles(settings, "/data/out", "/data/out/.staging", Layout.parse("uid"))
    """

    def __init__(self, settings: DeidSettings, destination_url: str, staging: str, layout: Layout, *,
                 run: str = "", overwrite: bool = False, dry_run: bool = False, threads: int = DEFAULT_THREADS,
                 mapping: bool = True, processes: int = 1) -> None:
        super().__init__()
        self.fn = _DeidentifyFilesFn(settings, destination_url, staging, layout, run, overwrite, dry_run, threads,
                                     mapping, processes)
        self.threads = threads
        self.processes = processes

    def expand(self, files: beam.PCollection) -> Transferred:
        if self.threads > 1 or self.processes > 1:
            files = files | "Batch" >> batched(self.threads, self.processes)
        done = files | "Deidentify" >> beam.ParDo(self.fn).with_outputs(FAILURES, MAPPING, OUTCOMES)
        return Transferred(done[OUTCOMES], done[FAILURES], done[MAPPING])
