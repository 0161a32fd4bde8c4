"""Copy one file to a local folder: read, validate, select, route and write it.

:class:`FileCopier` is the whole step per file of a copy to local disk. The copy transform runs it
in its own process, or hands batches of files to :class:`~dicom_transfer.io.processes.WorkerProcesses`
(worker processes on the same machine).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from dicom_transfer import metrics
from dicom_transfer.elements import FileRef, Outcome, instance_outcome
from dicom_transfer.errors import IO_ERRORS, ErrorRecord, error_text
from dicom_transfer.io.destination import Destination
from dicom_transfer.io.instances import place_file, read_and_validate
from dicom_transfer.layout import Layout, LayoutError
from dicom_transfer.part10 import InvalidInstance
from dicom_transfer.resources import ResourceFilter
from dicom_transfer.vocabulary import Stage


class Copied:
    """What became of one file: whether it was valid, the filter-file lines that selected it,
    and its outcome or failure."""

    __slots__ = ("valid", "lines", "result")

    def __init__(self, valid: bool, result: Outcome | ErrorRecord, lines: Sequence[str] = ()) -> None:
        self.valid, self.result, self.lines = valid, result, lines


class FileCopier:
    """Copies files below the local folder ``destination_url``, placed by ``layout``: validated,
    optionally selected by a filter file, written atomically (the first input written to a path
    stays, labelled with ``run``). Thread-safe."""

    def __init__(self, destination_url: str, layout: Layout, run: str, overwrite: bool, dry_run: bool) -> None:
        self.destination_url = destination_url
        self.layout = layout
        self.keywords = layout.attribute_keywords
        self.run = run
        self.overwrite = overwrite
        self.dry_run = dry_run
        self.selection: ResourceFilter | None = None  # what copy_all selects by (a filter file's)
        self.destination = Destination(destination_url)

    def copy_all(self, refs: Iterable[FileRef]) -> list[Copied]:
        """:meth:`copy` each of ``refs``, selected by :attr:`selection`."""
        return [self.copy(ref, self.selection) for ref in refs]

    def copy(self, ref: FileRef, selection: ResourceFilter | None = None) -> Copied:
        """Validate, select, route and write the file at ``ref``."""
        try:
            instance, data = read_and_validate(ref, self.keywords)
        except InvalidInstance as exc:
            return Copied(False, ErrorRecord.create(ref.url, f"invalid DICOM ({exc.check}): {exc}", Stage.VALIDATE))
        except IO_ERRORS as exc:
            return Copied(False, ErrorRecord.create(ref.url, f"cannot read file: {error_text(exc)}", Stage.READ))
        lines: list[str] = []
        if selection is not None:
            selecting = selection.selecting(instance.study_uid, instance.series_uid, instance.sop_uid)
            if not selecting:
                return Copied(True, instance_outcome(metrics.FILTERED, instance, ""))
            lines = [path.filter_line for path in selecting]
        try:
            relative = self.layout.relative_path(instance.values())
        except LayoutError as exc:
            return Copied(True, ErrorRecord.create(instance.url, str(exc), Stage.ROUTE, uids=instance.uids), lines)
        target = self.destination.url_of(relative)
        kind = place_file(self.destination, relative, instance.url, instance.size, source=instance.url,
                          uids=instance.uids, run=self.run, overwrite=self.overwrite, dry_run=self.dry_run,
                          source_md5=instance.md5, data=data)
        if isinstance(kind, ErrorRecord):
            return Copied(True, kind, lines)
        # The manifest's checksum: of the bytes this worker read, validated and wrote (or compared);
        # a larger file goes from file to file in the kernel (sendfile), unseen, so it has none.
        sha256 = hashlib.sha256(data).hexdigest() if data is not None and not self.dry_run else None
        return Copied(True, instance_outcome(kind, instance, target, sha256=sha256), lines)
