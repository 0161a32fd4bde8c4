"""Expand wildcard patterns into the files they match."""

from __future__ import annotations

import json
import logging
import os
import zlib
from collections.abc import Iterable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils.windowed_value import WindowedValue

from dicom_transfer import metrics
from dicom_transfer.elements import FileRef
from dicom_transfer.errors import FAILURES, IO_ERRORS, ErrorRecord, error_text
from dicom_transfer.io.files import scheme_of
from dicom_transfer.io.listing import NotAFile, list_pattern
from dicom_transfer.progress import ProgressLog
from dicom_transfer.transforms.dofn import DoFn, finished
from dicom_transfer.transforms.results import Listed
from dicom_transfer.vocabulary import Stage
from dicom_transfer.wildcards import parse_pattern

LOG = logging.getLogger(__name__)
FILES = "files"
UNMATCHED = "unmatched"
FILE_COUNTS = "file_counts"


class _ExpandPatternFn(DoFn):
    def __init__(self, strict: bool = False, exclude: tuple[str, ...] = ()) -> None:
        self.strict = strict
        self.exclude = tuple(prefix.rstrip("/") + "/" for prefix in exclude)
        self.matched = Metrics.counter(metrics.NAMESPACE, metrics.FILES_MATCHED)
        self.unmatched = Metrics.counter(metrics.NAMESPACE, metrics.UNMATCHED_PATTERNS)

    def setup(self) -> None:
        self.progress = ProgressLog("expand")  # a listing of millions of objects takes a while

    def start_bundle(self) -> None:
        self.buckets: dict[int, list[tuple]] = {}
        self.held = 0

    def process(self, text: str) -> Iterator:
        try:
            for output in self._expand(text):
                if isinstance(output, beam.pvalue.TaggedOutput):
                    yield output
                    continue
                self._found(output)
                url = output[0]  # into its bucket (see BUCKETS); a plain tuple, compact to shuffle
                self.buckets.setdefault(zlib.crc32(url.encode("utf-8")) % BUCKETS, []).append(tuple(output))
                self.held += 1
                if self.held >= HELD:
                    yield from self._chunks()
        finally:
            self.progress.report("patterns")
            self.progress.flush()

    def _found(self, found: FileRef) -> None:
        self.progress.add(1, found.size)
        self.progress.report("found")

    def _chunks(self) -> Iterator[tuple[int, bytes]]:
        buckets, self.buckets, self.held = self.buckets, {}, 0
        for bucket, files in buckets.items():
            yield bucket, pack_files(files)

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for chunk in self._chunks():
            yield finished(chunk)

    def _expand(self, text: str) -> Iterator:
        try:
            pattern = parse_pattern(text)
        except ValueError as exc:
            yield beam.pvalue.TaggedOutput(FAILURES, ErrorRecord.create(text, str(exc), Stage.EXPAND))
            return
        count = excluded = 0
        try:
            for found in list_pattern(pattern):
                if isinstance(found, NotAFile):
                    yield beam.pvalue.TaggedOutput(FAILURES, ErrorRecord.create(
                        found.args[0],
                        f"is a directory, not a file (matched by {text!r}; "
                        f"use '{found.args[0]}/**' to take the files below it)",
                        Stage.EXPAND))
                    continue
                if self.exclude and found.url.startswith(self.exclude):
                    excluded += 1
                    continue
                if not is_utf8(found.url):  # Beam, the manifest and errors.log carry UTF-8 text
                    yield beam.pvalue.TaggedOutput(FAILURES, ErrorRecord.create(
                        printable(found.url), "file name is not valid UTF-8 (its bytes are shown as "
                        "\\x escapes): rename it to copy it", Stage.EXPAND))
                    continue
                count += 1
                yield found
        except IO_ERRORS as exc:
            yield beam.pvalue.TaggedOutput(FAILURES, ErrorRecord.create(
                text, f"cannot list files for this pattern: {error_text(exc)}", Stage.EXPAND))
            return
        if excluded:
            LOG.warning("%d file(s) matched by %r are below the destination and were not read "
                        "(they are this product's own outputs and reports)", excluded, text)
        self.matched.inc(count)
        if count == 0:
            self.unmatched.inc()
            if self.strict:
                record = ErrorRecord.create(text, "pattern matched no file", Stage.EXPAND)
                yield beam.pvalue.TaggedOutput(FAILURES, record)
            else:
                LOG.warning("input pattern %r matched no file", text)
                yield beam.pvalue.TaggedOutput(UNMATCHED, ("patterns", text))


def may_overlap(patterns: list[str]) -> bool:
    """Whether a file may be matched by two of ``patterns``: one is given twice, or the folder
    (or file) a pattern starts from is, or is below, another's. An input list of separate study
    folders never overlaps."""
    roots = []
    for text in patterns:
        try:
            root = parse_pattern(text).root
        except ValueError:  # lists nothing: one error record
            continue
        roots.append(root if scheme_of(root) else os.path.abspath(root or "."))
    for index, root in enumerate(roots):
        for other in roots[index + 1:]:
            if root == other or other.startswith(root.rstrip("/") + "/") or root.startswith(other.rstrip("/") + "/"):
                return True
    return False


def is_utf8(text: str) -> bool:
    """Whether ``text`` (a path as the OS gave it: undecodable bytes as surrogates) is UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(text: str) -> str:
    """``text`` with the bytes that are not UTF-8 shown as ``\\xNN``."""
    return os.fsencode(text).decode("utf-8", "backslashreplace")


# Files found cross the grouping that de-duplicates them (a file matched by two patterns) and
# spreads them over workers in chunks, keyed by a hash of their URL into one of BUCKETS buckets
# (a URL always falls into the same one), at most HELD held at once per bundle: a few thousand
# elements per million files rather than one each. On the DirectRunner, whose grouping holds
# every element in memory (a key, a list and a value each, ~300 bytes of Python objects beside
# the data), the memory of the listing grows 4-5x slower with the number of files.
BUCKETS, HELD = 1024, 10_000


def pack_files(files: list[tuple]) -> bytes:
    """A chunk of ``(url, size, md5, version)`` tuples as compressed JSON: the URLs of a listing
    share long prefixes, so a chunk shrinks 4-6x (the DirectRunner holds several copies of a
    grouping's data while handing it on)."""
    return zlib.compress(json.dumps(files, separators=(",", ":")).encode("utf-8"), 1)


def unpack_files(chunk: bytes) -> list[list]:
    return json.loads(zlib.decompress(chunk))


class _ListFn(_ExpandPatternFn):
    """The files found, straight on as :class:`FileRef` values, for a runner that executes the whole
    pipeline in this process: nothing to spread over workers, so no grouping, and the next steps
    start on the first file while the listing goes on. A file matched by several patterns goes on
    once: the URLs seen are kept (~150 bytes each) only when patterns may overlap (see
    :func:`may_overlap`). Per bundle, how many files went on (tagged ``file_counts``)."""

    def __init__(self, strict: bool, exclude: tuple[str, ...], distinct: bool) -> None:
        super().__init__(strict, exclude)
        self.distinct = distinct

    def setup(self) -> None:
        super().setup()
        self.seen: set[str] = set()  # across bundles: the runner is in this process, this is its one DoFn

    def start_bundle(self) -> None:
        self.count = 0

    def process(self, text: str) -> Iterator:
        try:
            for output in self._expand(text):
                if not isinstance(output, beam.pvalue.TaggedOutput):
                    if self.distinct:
                        if output.url in self.seen:
                            continue
                        self.seen.add(output.url)
                    self._found(output)
                    self.count += 1
                yield output
        finally:
            self.progress.report("patterns")
            self.progress.flush()

    def finish_bundle(self) -> Iterator:
        if self.count:
            yield finished(beam.pvalue.TaggedOutput(FILE_COUNTS, self.count))


class _FirstFn(DoFn):
    """One :class:`FileRef` per URL (from ``(bucket, chunks of FileRef tuples)`` groups); and,
    per bundle, how many there were (tagged ``file_counts``): the count of files matched, without
    a per-file element to count downstream."""

    def start_bundle(self) -> None:
        self.count = 0

    def process(self, keyed: tuple[int, Iterable[bytes]]) -> Iterator[FileRef]:
        _, chunks = keyed
        seen: set[str] = set()  # the URLs of one bucket
        for chunk in chunks:
            for found in unpack_files(chunk):
                if found[0] not in seen:
                    seen.add(found[0])
                    self.count += 1
                    yield FileRef(*found)

    def finish_bundle(self) -> Iterator:
        if self.count:
            yield finished(beam.pvalue.TaggedOutput(FILE_COUNTS, self.count))


class ExpandPatterns(beam.PTransform):
    """Expand Google-style wildcard patterns into distinct :class:`FileRef` values.

    The output goes through a ``GroupByKey`` (on one of ``BUCKETS`` buckets of a
    hash of the file URL, the files in compressed chunks), which both drops files
    matched by several patterns and breaks fusion, so that reading and validation
    parallelise across workers (up to ``BUCKETS`` groups at once). With ``spread=False``, for a
    runner that executes the whole pipeline in one process, there is no grouping: each file goes on
    as it is found (:class:`_ListFn`), so the next steps start while the listing goes on.

    Returns :class:`~.results.Listed`: ``files`` (FileRef), ``failures`` (ErrorRecord),
    ``unmatched`` (``("patterns", pattern)`` for each pattern that matched
    nothing; with ``strict`` those are failures instead) and ``file_counts``
    (numbers of distinct files, one per bundle: their sum is the number of files matched). Files below any of
    the ``exclude`` prefixes (a destination inside the input) are skipped.

    Example::

        expanded = p | ExpandPatterns(["data/**.dcm"])
        expanded.files | ReadAndValidate()
    """

    def __init__(self, patterns: Iterable[str], strict: bool = False, exclude: Iterable[str] = (),
                 spread: bool = True) -> None:
        super().__init__()
        self.patterns = list(patterns)
        self.strict = strict
        self.exclude = tuple(exclude)
        self.spread = spread

    def expand(self, pbegin: beam.pvalue.PBegin) -> Listed:
        if not self.spread:
            listed = (
                pbegin
                | "Patterns" >> beam.Create(self.patterns, reshuffle=False)
                | "List" >> beam.ParDo(_ListFn(self.strict, self.exclude, may_overlap(self.patterns))).with_outputs(
                    FAILURES, UNMATCHED, FILE_COUNTS, main=FILES)
            )
            return Listed(listed[FILES], listed[FAILURES], listed[UNMATCHED], listed[FILE_COUNTS])
        expanded = (
            pbegin
            | "Patterns" >> beam.Create(self.patterns)
            | "List" >> beam.ParDo(_ExpandPatternFn(self.strict, self.exclude)).with_outputs(
                FAILURES, UNMATCHED, main=FILES)
        )
        files = (
            expanded[FILES]
            | "DeduplicateAndReshuffle" >> beam.GroupByKey()
            | "First" >> beam.ParDo(_FirstFn()).with_outputs(FILE_COUNTS, main=FILES)
        )
        return Listed(files[FILES], expanded[FAILURES], expanded[UNMATCHED], files[FILE_COUNTS])
