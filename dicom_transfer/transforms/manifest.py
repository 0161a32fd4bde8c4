"""Write the manifest (one JSON line per instance handled) and the per-series reconciliation.

Both are written by the pipeline in bounded memory: each bundle appends its lines to its own
part file (fsspec), and one final step concatenates the parts, streamed, into the file the user
reads. The reconciliation needs each series' entries together (one series at a time in memory)
and asks the destination what it holds for that series: the layout's listing of an object store
or folder, or QIDO-RS for a DICOMweb store. The entries do not cross the grouping by series
themselves: each bundle writes them, series by series, to a part file of its own, and only where
they are (``(part, offset, length)``, a few per series) is grouped. On the DirectRunner, where a
grouping holds all its data in memory, several times over while handing it on, the memory of a
run then no longer grows with its number of instances there.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import posixpath
import threading
import uuid
from collections.abc import Iterable, Iterator
from typing import IO, TYPE_CHECKING

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils.windowed_value import WindowedValue

from dicom_transfer import manifest, metrics
from dicom_transfer.elements import OUTCOMES, Outcome, count_outcome, merge_counts
from dicom_transfer.errors import IO_ERRORS, ErrorRecord, error_text, redact, redact_url, utc_now_iso
from dicom_transfer.io.destination import Destination
from dicom_transfer.io.files import CHUNK, is_local, scheme_of, split_url
from dicom_transfer.io.holdings import listed_sizes, local_size, reconcile_with
from dicom_transfer.io.manifests import previous_lines
from dicom_transfer.progress import ProgressLog
from dicom_transfer.series_answers import HeldFingerprint
from dicom_transfer.transforms.dofn import DoFn, finished
from dicom_transfer.transforms.results import QuickChecked

if TYPE_CHECKING:
    from dicom_transfer.io.dicomweb import DicomwebClient
    from dicom_transfer.transforms.migrate_targets import MigrationTarget

LOG = logging.getLogger(__name__)


# -- bounded-memory text output -----------------------------------------------------------------

def _open_part(parts_url: str, mode: str) -> tuple[str, IO]:
    """A new part file below ``parts_url`` (its folder made on local disk): its URL, opened."""
    fs, path = split_url(parts_url)
    if is_local(fs):
        fs.makedirs(path, exist_ok=True)
    part = f"{parts_url}/{uuid.uuid4().hex}.part"
    return part, fs.open(split_url(part)[1], mode, **({"encoding": "utf-8"} if "b" not in mode else {}))


class _PartWriter:
    """The part file of one bundle below ``parts_url``: created with its first line; lines are
    written ``BATCH`` at a time (one call down the file object's layers for many lines)."""

    BATCH = 1000

    def __init__(self, parts_url: str) -> None:
        self.parts_url = parts_url
        self.out: IO[str] | None = None
        self.part = ""
        self.pending: list[str] = []

    def write(self, line: str) -> None:
        self.pending.append(line)
        if len(self.pending) >= self.BATCH:
            self._flush()

    def _flush(self) -> None:
        if self.out is None:
            self.part, self.out = _open_part(self.parts_url, "w")
        self.out.write("\n".join(self.pending) + "\n")
        self.pending = []

    def close(self) -> str | None:
        """Close the part; its URL, or None if nothing was written."""
        if self.pending:
            self._flush()
        if self.out is None:
            return None
        self.out.close()
        return self.part


class _WriteRowsFn(DoFn):
    """Appends the reconciliation rows of one bundle, as CSV lines, to a part file of its own;
    yields the part's URL."""

    def __init__(self, parts_url: str) -> None:
        self.parts_url = parts_url

    def start_bundle(self) -> None:
        self.writer = _PartWriter(self.parts_url)

    def process(self, row: dict) -> None:
        self.writer.write(manifest.csv_row(row))

    def finish_bundle(self) -> Iterator[WindowedValue]:
        part = self.writer.close()
        if part is not None:
            yield finished(part)


def _concatenate(url: str, parts: list[str], header: str | None, parts_url: str) -> str:
    """Write ``header`` and every part, in order, into ``url`` (streamed), then remove the parts."""
    fs, path = split_url(url)
    if is_local(fs):
        fs.makedirs(posixpath.dirname(path) or ".", exist_ok=True)
    with fs.open(path, "wb") as out:
        if header is not None:
            out.write((header + "\n").encode("utf-8"))
        for part in sorted(parts):
            with fs.open(split_url(part)[1], "rb") as source:
                while chunk := source.read(CHUNK):
                    out.write(chunk)
    _remove_parts(parts, parts_url)
    return url


def _remove_parts(parts: list[str], parts_url: str) -> None:
    parts_fs, parts_path = split_url(parts_url)
    for part in parts:
        parts_fs.rm_file(split_url(part)[1])
    if is_local(parts_fs) and parts_fs.exists(parts_path):
        parts_fs.rmdir(parts_path)


class _EntriesWriter:
    """The series entries of one bundle, spilled: each flush writes the packed entries of every
    series held into this bundle's part file below ``parts_url`` and returns where each went,
    ``((study, series), (part, offset, length))``."""

    def __init__(self, parts_url: str) -> None:
        self.parts_url = parts_url
        self.out: IO[bytes] | None = None
        self.part = ""
        self.offset = 0

    def write(self, series: dict[tuple[str, str], manifest.SeriesEntries]) -> list[tuple[tuple[str, str], tuple]]:
        if not series:
            return []
        if self.out is None:
            self.part, self.out = _open_part(self.parts_url, "wb")
        located, texts = [], []
        for key, entries in series.items():
            data = entries.packed().encode("utf-8")
            located.append((key, (self.part, self.offset, len(data))))
            texts.append(data)
            self.offset += len(data)
        self.out.write(b"".join(texts))
        return located

    def close(self) -> str | None:
        """Close the part; its URL, or None if nothing was written."""
        if self.out is None:
            return None
        self.out.close()
        return self.part


def read_entries(locations: Iterable[tuple[str, int, int]]) -> list[str]:
    """The packed texts at ``locations`` (``(part, offset, length)``), each part opened once."""
    by_part: dict[str, list[tuple[int, int]]] = {}
    for part, offset, length in locations:
        by_part.setdefault(part, []).append((offset, length))
    texts = []
    for part, ranges in by_part.items():
        fs, path = split_url(part)
        with fs.open(path, "rb") as source:
            for offset, length in sorted(ranges):
                source.seek(offset)
                texts.append(source.read(length).decode("utf-8"))
    return texts


# -- what the destination holds -----------------------------------------------------------------

class TargetCheck:
    """Asks a migration's or an import's destination (a :class:`MigrationTarget`: QIDO-RS for
    a DICOMweb store, an image-level C-FIND for a PACS) which instances of a series it holds."""

    per_series = True

    def __init__(self, target: MigrationTarget) -> None:
        self.target = target
        self.opened = False
        self.opening = threading.Lock()  # the first questions may come at once

    @property
    def questions_at_once(self) -> int:
        """How many series the target may be asked about at once (see ``MigrationTarget``)."""
        return self.target.questions_at_once

    def __getstate__(self) -> dict:
        return {"target": self.target}  # opened on the worker, by its first question

    def __setstate__(self, state: dict) -> None:
        TargetCheck.__init__(self, state["target"])

    def present(self, study: str, series: str, lines: list[dict]) -> dict[str, int | None]:  # noqa: ARG002
        if not self.opened:
            with self.opening:
                if not self.opened:
                    self.target.setup()
                    self.opened = True
        return dict.fromkeys(self.target.held(study, series))

    def close(self) -> None:
        if self.opened:
            self.target.teardown()
            self.opened = False


class DicomwebCheck(TargetCheck):
    """Asks a DICOMweb store (QIDO-RS, paged) which instances of a series it holds."""

    def __init__(self, client: DicomwebClient) -> None:
        from dicom_transfer.transforms.migrate_targets import DicomwebTarget  # requests: not for a copy (~0.1 s)

        super().__init__(DicomwebTarget(client))


# -- the manifest and the reconciliation of a run -----------------------------------------------

class _ReconcileSeriesFn(DoFn):
    """One reconciliation row per series. A check that may be asked about several series at once
    (``questions_at_once``: a DICOMweb server's QIDO-RS) is asked on a pool of that many threads,
    the rows leaving in the order of the series: Orthanc answers an instance-level query from each
    stored file (~0.5-0.9 ms of its CPU per instance), and one question at a time left a core idle
    while the rest of the run waits for the last row."""

    def __init__(self, check) -> None:
        self.check = check

    def setup(self) -> None:
        self.threads = max(1, int(getattr(self.check, "questions_at_once", 1)))
        self.pool = concurrent.futures.ThreadPoolExecutor(self.threads) if self.threads > 1 else None
        self.pending: collections.deque[concurrent.futures.Future] = collections.deque()

    def teardown(self) -> None:
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.shutdown(wait=True)
        close = getattr(self.check, "close", None)
        if close is not None:
            close()

    def process(self, element: tuple[tuple[str, str], Iterable[tuple[str, int, int] | HeldFingerprint]]
                ) -> Iterator[dict]:
        (study, series), values = element
        # The grouped values are read here, on the bundle's thread (the runner may serve them lazily):
        # where the series' entries are, and what the store step found the series held, if it asked.
        locations: list[tuple[str, int, int]] = []
        earlier: list[HeldFingerprint] = []
        for value in values:
            if isinstance(value, HeldFingerprint):
                earlier.append(value)
            else:
                locations.append(value)
        if not locations:  # answers about a series without entries: none of this run's instances
            return
        if self.pool is None:
            yield self._row(study, series, locations, earlier)
            return
        self.pending.append(self.pool.submit(self._row, study, series, locations, earlier))
        while self.pending and (len(self.pending) > 2 * self.threads or self.pending[0].done()):
            yield self.pending.popleft().result()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        while self.pending:
            yield finished(self.pending.popleft().result())

    def _row(self, study: str, series: str, locations: list[tuple[str, int, int]],
             earlier: list[HeldFingerprint]) -> dict:
        entries = manifest.unpack_series_entries(read_entries(locations))
        return reconcile_with(self.check, study, series, entries, earlier=earlier).to_dict()


class _StudyTotalFn(beam.CombineFn):
    def create_accumulator(self):
        return None

    def add_input(self, accumulator, row: dict):
        return manifest.add_to_study(accumulator, _row_from_dict(row))

    def merge_accumulators(self, accumulators):
        total = None
        for accumulator in accumulators:
            if accumulator is not None:
                total = accumulator if total is None else _merge_study(total, accumulator)
        return total

    def extract_output(self, accumulator) -> dict:
        return accumulator.to_dict()


def _merge_study(total: manifest.SeriesRow, other: manifest.SeriesRow) -> manifest.SeriesRow:
    return manifest.add_to_study(total, other)


def _row_from_dict(row: dict) -> manifest.SeriesRow:
    return manifest.SeriesRow(row["StudyInstanceUID"], row["SeriesInstanceUID"], row["found"], row["selected"],
                              row["stored"], row["unchanged"], row["failed"], row["present"],
                              list(row["missingSOPInstanceUIDs"]), list(row["extraSOPInstanceUIDs"]))


class _OverviewFn(beam.CombineFn):
    """From every reconciliation row: the summary's section (series rows), the number of studies
    and the least complete study totals (see :func:`~dicom_transfer.manifest.empty_overview`)."""

    def create_accumulator(self) -> dict:
        return manifest.empty_overview()

    def add_input(self, accumulator: dict, row: dict) -> dict:
        return manifest.add_to_overview(accumulator, row)

    def merge_accumulators(self, accumulators: Iterable[dict]) -> dict:
        return manifest.merge_overviews(accumulators)

    def extract_output(self, accumulator: dict) -> dict:
        return {**accumulator, "studies": manifest.least_complete(accumulator["studies"])}


class _FiguresFn(beam.CombineFn):
    """Merges the ``(timeline, failure kinds, outcome counts)`` that each bundle of manifest lines
    added up."""

    def create_accumulator(self) -> tuple[dict, dict, dict]:
        return {}, {}, {}

    def add_input(self, accumulator: tuple[dict, dict, dict], partial: tuple[dict, dict, dict]) -> tuple:
        return self.merge_accumulators([accumulator, partial])

    def merge_accumulators(self, accumulators: Iterable[tuple[dict, dict, dict]]) -> tuple[dict, dict, dict]:
        timelines, kinds, counts = zip(*accumulators, strict=True)
        return (manifest.merge_timelines(timelines), manifest.merge_failure_kinds(kinds),
                merge_counts(counts))

    def extract_output(self, accumulator: tuple[dict, dict, dict]) -> dict:
        return {"timeline": accumulator[0], "failure_kinds": accumulator[1], "counts": accumulator[2]}


@dataclasses.dataclass
class Audit:
    """What :class:`AuditRun` produces: one-element PCollections the summary and the report read."""

    written: beam.PCollection  # {"manifest": URL, "reconciliation": URL}, once both are written
    overview: beam.PCollection  # {"section": the summary's section, "study_count": n, "studies": [...]}
    # {"timeline": {second: [n, bytes]}, "failure_kinds": {kind: [n, first]}, "counts": {kind: n, ...}}
    figures: beam.PCollection

    def side_inputs(self) -> dict[str, beam.pvalue.AsSingleton]:
        """``files``, ``overview`` and ``figures`` as side inputs (an empty run's figures included)."""
        return {"files": beam.pvalue.AsSingleton(self.written),
                "overview": beam.pvalue.AsSingleton(
                    self.overview, default_value=_OverviewFn().extract_output(_OverviewFn().create_accumulator())),
                "figures": beam.pvalue.AsSingleton(
                    self.figures, default_value=_FiguresFn().extract_output(_FiguresFn().create_accumulator()))}


class AuditRun(beam.PTransform):
    """From a run's ``(outcomes, failures)``: write the manifest and the reconciliation, and
    compute what the summary and the report show.

    ``check`` (:class:`LayoutCheck`, :class:`DicomwebCheck` or None) says how to ask the
    destination what it holds; None (a dry run) reconciles the counts only. ``answers``
    (optional): ``((study, series), HeldFingerprint)`` pairs, what the store step found each series
    held while the run still sent others; a series whose answer names exactly the instances its
    lines expect is not asked again (see :mod:`~dicom_transfer.series_answers`).

    Few steps, whatever the run's size: on the DirectRunner each step costs a fixed time.

    Example::

        audit = (outcomes, failures) | AuditRun("out/manifest.jsonl", "out/reconciliation.csv",
                                                LayoutCheck("out", layout))
    """

    def __init__(self, manifest_url: str, reconciliation_url: str, check=None,
                 answers: beam.PCollection | None = None) -> None:
        super().__init__()
        self.manifest_url = manifest_url
        self.reconciliation_url = reconciliation_url
        self.check = check
        self.answers = answers

    def expand(self, inputs: tuple) -> Audit:
        outcomes, failures = inputs
        manifest_parts = _parts_url(self.manifest_url)
        entries_parts = _parts_url(self.manifest_url + ".entries")
        # One step on each input, not one on their Flatten: each fuses with the step that made
        # its elements, which then never leave it one by one (a Flatten of per-instance
        # collections would encode and decode every element once more).
        written = [
            collection | f"WriteManifestParts{label}" >> beam.ParDo(
                _ManifestLinesFn(manifest_parts, entries_parts)).with_outputs(
                PARTS, ENTRY_PARTS, FIGURES, main=SERIES_LINES)
            for label, collection in (("", outcomes), ("OfFailures", failures))]

        def joined(tag: str) -> beam.PCollection:
            return tuple(output[tag] for output in written) | f"All{tag.title()}" >> beam.Flatten()

        series_lines = joined(SERIES_LINES)
        if self.answers is not None and self.check is not None:
            series_lines = (series_lines, self.answers) | "WithEarlierAnswers" >> beam.Flatten()
        rows = (
            series_lines
            | "GroupBySeries" >> beam.GroupByKey()
            | "ReconcileSeries" >> beam.ParDo(_ReconcileSeriesFn(self.check))
        )
        studies = (
            rows
            | "ByStudy" >> beam.Map(lambda row: (row["StudyInstanceUID"], row))
            | "StudyTotals" >> beam.CombinePerKey(_StudyTotalFn())
            | "StudyRows" >> beam.Values()
        )
        all_rows = (rows, studies) | "AllRows" >> beam.Flatten()
        csv_parts_url = _parts_url(self.reconciliation_url)
        csv_parts = all_rows | "WriteReconciliationParts" >> beam.ParDo(_WriteRowsFn(csv_parts_url))
        files = (
            outcomes.pipeline
            | "Files" >> beam.Create([(self.manifest_url, self.reconciliation_url)])
            | "Concatenate" >> beam.Map(
                _concatenate_both, manifest_parts=beam.pvalue.AsList(joined(PARTS)), manifest_parts_url=manifest_parts,
                csv_parts=beam.pvalue.AsList(csv_parts), csv_parts_url=csv_parts_url,
                entry_parts=beam.pvalue.AsList(joined(ENTRY_PARTS)), entry_parts_url=entries_parts)
        )
        # Without Beam's default for an empty input (three more steps each): the side inputs that
        # read these give the same default (see Audit.side_inputs).
        return Audit(written=files,
                     overview=all_rows | "Overview" >> beam.CombineGlobally(_OverviewFn()).without_defaults(),
                     figures=joined(FIGURES) | "Figures" >> beam.CombineGlobally(_FiguresFn()).without_defaults())


def _parts_url(url: str) -> str:
    """Where the part files of ``url`` go while a run writes them (beside it, hidden)."""
    directory, name = posixpath.split(url)
    return f"{directory}/.{name}.{uuid.uuid4().hex[:8]}.parts"


def _concatenate_both(urls: tuple[str, str], *, manifest_parts: list[str], manifest_parts_url: str,
                      csv_parts: list[str], csv_parts_url: str, entry_parts: list[str],
                      entry_parts_url: str) -> dict[str, str]:
    """Both files, once the reconciliation is done (its rows are ``csv_parts``): the series
    entries it read go too."""
    manifest_url, reconciliation_url = urls
    _remove_parts(entry_parts, entry_parts_url)
    return {"manifest": _concatenate(manifest_url, manifest_parts, None, manifest_parts_url),
            "reconciliation": _concatenate(reconciliation_url, csv_parts, manifest.csv_header(), csv_parts_url)}


PARTS, ENTRY_PARTS, FIGURES, SERIES_LINES = "parts", "entry_parts", "figures", "series_lines"


class _ManifestLinesFn(DoFn):
    """One step per instance for the whole manifest: its line goes into this bundle's part file,
    the report's figures are added up per bundle, and what the reconciliation needs of the line
    goes on, keyed by series: the entries of a bundle gathered per series (at most ``HELD``
    held at once) into one text (:class:`SeriesEntries`), written to the bundle's entries part
    (:class:`_EntriesWriter`); what goes on is where: ``((study, series), (part, offset, length))``,
    so that the grouping by series shuffles a few locations rather than one element per instance."""

    HELD = 10_000

    def __init__(self, parts_url: str, entries_url: str) -> None:
        self.parts_url = parts_url
        self.entries_url = entries_url

    def setup(self) -> None:
        self.progress = ProgressLog("report")

    def start_bundle(self) -> None:
        self.writer = _PartWriter(self.parts_url)
        self.entries = _EntriesWriter(self.entries_url)
        self.timeline: dict = {}
        self.kinds: dict = {}
        self.counts: dict[str, int] = {}
        self.series: dict[tuple[str, str], manifest.SeriesEntries] = {}
        self.held = 0

    def process(self, element: Outcome | ErrorRecord) -> Iterator:
        if isinstance(element, ErrorRecord):  # counted and shown by the errors.log step
            line = manifest.failure_line(element)
            self.writer.write(manifest.to_json_line(line))
            manifest.add_to_timeline(self.timeline, line)
            manifest.add_failure_kind(self.kinds, line)
            study, series = line["StudyInstanceUID"], line["SeriesInstanceUID"]
            entry = line
        else:  # every outcome is counted (a de-identified one too), instances' final ones written
            kind, size = element.kind, element.size
            count_outcome(self.counts, kind, size)
            self.progress.outcome(kind, size)
            time = utc_now_iso()
            text = manifest.outcome_json(element, time)  # the line, without a dict (plain functions:
            if text is None:  # no object per line)
                return
            self.writer.write(text)
            manifest.add_to_second(self.timeline, time, kind, size)
            study, series = element.study, element.series
            entry = manifest.reconciled_entry(element)
        if study and series:  # else a file that could not be read: no series to reconcile
            entries = self.series.get((study, series))
            if entries is None:
                entries = self.series[(study, series)] = manifest.SeriesEntries()
            entries.add(entry)
            self.held += 1
            if self.held >= self.HELD:
                yield from self._series_entries()

    def _series_entries(self) -> list[tuple[tuple[str, str], tuple]]:
        series, self.series, self.held = self.series, {}, 0
        return self.entries.write(series)

    def finish_bundle(self) -> Iterator:
        part = self.writer.close()
        if part is not None:
            yield finished(beam.pvalue.TaggedOutput(PARTS, part))
        for key_and_location in self._series_entries():
            yield finished(key_and_location)
        entries_part = self.entries.close()
        if entries_part is not None:
            yield finished(beam.pvalue.TaggedOutput(ENTRY_PARTS, entries_part))
        self.progress.flush()
        if self.timeline or self.kinds or self.counts:
            yield finished(beam.pvalue.TaggedOutput(FIGURES, (self.timeline, self.kinds, self.counts)))


# -- quick check of a re-run: what an earlier run moved, unchanged since, is not read again --------

UNREAD = "unread"


class _MatchPreviousFn(DoFn):
    """A file with an earlier successful line of the same size and version goes on to the output
    check; any other file is read as usual. On local disk the output is checked here (one
    ``stat``); on an object store it goes on as ``(directory, (file, line))``, for one listing
    per output directory."""

    def __init__(self, destination_url: str) -> None:
        self.destination_url = destination_url.rstrip("/")
        self.local = scheme_of(destination_url) is None
        self.unchanged = Metrics.counter(metrics.NAMESPACE, metrics.UNCHANGED)

    def process(self, element: tuple[str, dict]) -> Iterator:
        _, grouped = element
        files, previous = grouped["file"], grouped["previous"]
        for ref in files:
            line = next((line for line in previous if manifest.unchanged_since(line, ref.size, ref.version)), None)
            if line is None:
                yield beam.pvalue.TaggedOutput(UNREAD, ref)
            elif not self.local:
                yield posixpath.dirname(line["destination"]), (ref, line)
            elif local_size(line["destination"]) == line["size"]:
                self.unchanged.inc()
                yield beam.pvalue.TaggedOutput(OUTCOMES, manifest.unchanged_outcome(ref, line))
            else:
                yield beam.pvalue.TaggedOutput(UNREAD, ref)


class _OutputStillThereFn(DoFn):
    """One output directory, listed once: a candidate whose output is there with its size is
    ``unchanged``; any other is read as usual."""

    def __init__(self, destination_url: str) -> None:
        self.destination_url = destination_url.rstrip("/")

        self.unchanged = Metrics.counter(metrics.NAMESPACE, metrics.UNCHANGED)

    def setup(self) -> None:
        self.destination = Destination(self.destination_url)

    def process(self, element: tuple[str, Iterable[tuple]]) -> Iterator:
        directory_url, candidates = element
        base = redact(self.destination_url) + "/"
        candidates = list(candidates)
        sizes: dict[str, int] = {}
        if directory_url.startswith(base) or directory_url + "/" == base:
            try:
                sizes = dict(listed_sizes(self.destination, directory_url[len(base):]))
            except IO_ERRORS as exc:
                LOG.warning("cannot list %s (%s): its sources are read again", directory_url, error_text(exc))
        for ref, line in candidates:
            relative = line["destination"][len(base):]
            if sizes.get(relative) != line["size"]:
                yield beam.pvalue.TaggedOutput(UNREAD, ref)
                continue
            self.unchanged.inc()
            yield beam.pvalue.TaggedOutput(OUTCOMES, manifest.unchanged_outcome(ref, line))


class SkipUnchanged(beam.PTransform):
    """Files that an earlier run's manifest says were moved, unchanged since (same URL, size and
    modification time or listed MD5) and whose output is still there with the same size: counted
    ``unchanged`` without being read, as rsync's and gsutil's quick check do.

    Returns :class:`~.results.QuickChecked`: ``files`` (to read as usual) and ``outcomes`` (the unchanged ones).

    Example::

        checked = files | SkipUnchanged("out/.dicom-transfer/run-1/manifest.jsonl", "out")
        checked.files | ReadAndValidate()
    """

    def __init__(self, previous_manifest_url: str, destination_url: str, exclude: str = "") -> None:
        super().__init__()
        self.previous_manifest_url = previous_manifest_url
        self.destination_url = destination_url
        self.exclude = exclude

    def expand(self, files: beam.PCollection) -> QuickChecked:
        previous = (
            files.pipeline
            | "PreviousManifest" >> beam.Create([self.previous_manifest_url])
            | "ReadPrevious" >> beam.FlatMap(previous_lines, exclude=self.exclude)
            | "Reusable" >> beam.Filter(manifest.reusable)
            | "PreviousBySource" >> beam.Map(lambda line: (line["source"], line))
        )
        keyed = files | "FileBySource" >> beam.Map(lambda ref: (redact_url(redact(ref.url)), ref))
        matched = (
            {"file": keyed, "previous": previous}
            | "JoinPrevious" >> beam.CoGroupByKey()
            | "MatchPrevious" >> beam.ParDo(_MatchPreviousFn(self.destination_url)).with_outputs(
                UNREAD, OUTCOMES, main="candidates")
        )
        if scheme_of(self.destination_url) is None:  # checked already, one stat each
            return QuickChecked(matched[UNREAD], matched[OUTCOMES])
        checked = (
            matched["candidates"]
            | "GroupByOutputDirectory" >> beam.GroupByKey()
            | "OutputStillThere" >> beam.ParDo(_OutputStillThereFn(self.destination_url)).with_outputs(
                UNREAD, OUTCOMES)
        )
        unread = (matched[UNREAD], checked[UNREAD]) | "FilesToRead" >> beam.Flatten()
        return QuickChecked(unread, checked[OUTCOMES])
