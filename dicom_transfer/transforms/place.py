"""Place one instance (a file) at its layout path — the one step copy, write, export and the DIMSE
receivers share — and the journal in which a storage SCP outside the pipeline records what it
placed (C-MOVE)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping

import apache_beam as beam
from apache_beam.metrics import Metrics

from dicom_transfer import metrics
from dicom_transfer.elements import OUTCOMES, Outcome
from dicom_transfer.errors import FAILURES, ErrorRecord
from dicom_transfer.io.destination import PLACED, Destination
from dicom_transfer.io.files import open_url, split_url
from dicom_transfer.io.instances import instance_identifier, place_file
from dicom_transfer.layout import Layout, LayoutError
from dicom_transfer.progress import ProgressLog
from dicom_transfer.report import write_text
from dicom_transfer.vocabulary import Stage


def place_instance(destination: Destination, layout: Layout, values: Mapping[str, object], path: str,
                   size: int, *, overwrite: bool = False, dry_run: bool = False) -> Outcome | ErrorRecord:
    """Route the validated file at ``path`` (attributes ``values``) by ``layout`` and move it
    into place (:func:`place_file`).

    Returns an :class:`Outcome` (``success`` or ``unchanged``), or the :class:`ErrorRecord`
    saying why it could not be placed (stage ``route`` or ``write``).
    """
    uids = (str(values["StudyInstanceUID"]), str(values["SeriesInstanceUID"]), str(values["SOPInstanceUID"]))
    identifier = instance_identifier(*uids)
    try:
        relative = layout.relative_path(values)
    except LayoutError as exc:
        return ErrorRecord.create(identifier, str(exc), Stage.ROUTE)
    kind = place_file(destination, relative, path, size, source=identifier, uids=uids, overwrite=overwrite,
                      dry_run=dry_run, move=True)
    if isinstance(kind, ErrorRecord):
        return kind
    return Outcome(kind, size, identifier, destination.url_of(relative), *uids)


class Placements:
    """Counts placed instances (Metrics and progress, on the bundle's thread) and tags each
    result for its output. A DoFn makes one in ``__init__`` and calls :meth:`start` in ``setup()``."""

    def __init__(self, dry_run: bool = False) -> None:
        self.dry_run = dry_run
        self.counters = {kind: Metrics.counter(metrics.NAMESPACE, kind)
                         for kind in (metrics.SUCCESS, metrics.UNCHANGED)}
        self.bytes_written = Metrics.counter(metrics.NAMESPACE, metrics.BYTES_WRITTEN)

    def start(self, stage: str) -> None:
        self.progress = ProgressLog(stage)

    def output(self, result: Outcome | ErrorRecord) -> beam.pvalue.TaggedOutput:
        if isinstance(result, ErrorRecord):
            return beam.pvalue.TaggedOutput(FAILURES, result)
        written = result.size if result.kind == PLACED and not self.dry_run else 0
        if result.kind in self.counters:
            self.counters[result.kind].inc()
        self.bytes_written.inc(written)
        self.progress.add(1, written)
        return beam.pvalue.TaggedOutput(OUTCOMES, result)


# -- the receiver's journal: one small JSON document per instance it was sent ---------------------

def journal_url(journal: str, study: str, series: str, sop: str) -> str:
    return f"{journal.rstrip('/')}/{study}/{series}/{sop}.json"


def write_journal_entry(journal: str, study: str, series: str, sop: str, result: Outcome | ErrorRecord) -> None:
    """Record what became of one received instance (the receiver, before it answers the C-STORE)."""
    entry: dict[str, object]
    if isinstance(result, ErrorRecord):
        entry = {"kind": "failure", "error": result.error, "stage": result.stage}
    else:
        entry = {"kind": result.kind, "size": result.size, "destination": result.destination}
    write_text(journal_url(journal, study, series, sop), json.dumps(entry))


def clear_journal_entries(journal: str, study: str, series: str, sops: list[str]) -> None:
    """Forget what a receiver recorded for these instances (before asking for them again), so that
    an entry from an earlier run is never taken for this one's.

    Raises
    ------
    OSError
        The journal could not be changed.
    """
    fs, _ = split_url(journal)
    for sop in sops:
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(split_url(journal_url(journal, study, series, sop))[1])


def read_journal_entry(journal: str, study: str, series: str, sop: str) -> Outcome | ErrorRecord | None:
    """What the receiver recorded for one instance, or ``None`` if it never received it.

    Raises
    ------
    OSError
        The journal could not be read.
    """
    try:
        with open_url(journal_url(journal, study, series, sop)) as raw:
            entry = json.loads(raw.read())
    except FileNotFoundError:
        return None
    identifier = instance_identifier(study, series, sop)
    if entry["kind"] == "failure":
        return ErrorRecord.create(identifier, entry["error"], entry["stage"], uids=(study, series, sop))
    return Outcome(entry["kind"], entry["size"], identifier, entry["destination"], study, series, sop)
