"""De-identify validated instances in flight (PS3.15 Annex E Basic Profile), and write the mapping table."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import os
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from typing import BinaryIO, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from dicom_transfer import metrics
from dicom_transfer.deid.profile import Profile, ProfileOptions
from dicom_transfer.deid.pseudonyms import DeidKeyError, Pseudonyms, check_key
from dicom_transfer.deid.rewrite import DeidentificationError, Deidentifier
from dicom_transfer.elements import OUTCOMES, Outcome, ValidInstance
from dicom_transfer.errors import FAILURES, IO_ERRORS, ErrorRecord, error_text
from dicom_transfer.io.destination import Destination, remove_local
from dicom_transfer.io.files import local_path, open_url, split_url
from dicom_transfer.io.instances import plain_value
from dicom_transfer.layout import Layout
from dicom_transfer.part10 import InvalidInstance, read_head, validate_part10
from dicom_transfer.progress import ProgressLog
from dicom_transfer.transforms.concurrency import DEFAULT_THREADS, BatchedIoFn, batched
from dicom_transfer.transforms.dofn import DoFn
from dicom_transfer.transforms.place import place_instance
from dicom_transfer.transforms.results import Deidentified
from dicom_transfer.transforms.validate import INSTANCES
from dicom_transfer.vocabulary import Stage

MAPPING = "mapping"
DEIDENTIFIED = "deidentified"  # outcome kind, counted into the summary
MAPPING_HEADER = ("identifier", "original", "pseudonym", "seen_as")
OUTPUT_HEAD = 32 << 10  # the first bytes of a de-identified file, read back to check its header


class MappingRow(NamedTuple):
    """One replacement: ``kind`` is ``PatientID`` or ``UID``; ``keyword`` where it was seen."""

    kind: str
    original: str
    pseudonym: str
    keyword: str


@dataclasses.dataclass(frozen=True)
class DeidSettings:
    """How to de-identify: the profile's options and where the key is.

    The key is named, never held: each worker reads it from the environment variable
    ``key_env`` or the file (or object) ``key_file`` in ``setup()``, so that it is not
    serialised into the pipeline. ``allow_burned_in`` passes instances that may carry
    identifying text in their pixels instead of failing them.
    """

    options: ProfileOptions = ProfileOptions()
    key_env: str | None = None
    key_file: str | None = None
    allow_burned_in: bool = False

    def load_key(self) -> bytes:
        """The key, checked; raises :class:`DeidKeyError` (never showing the key)."""
        if bool(self.key_env) == bool(self.key_file):
            raise DeidKeyError("de-identification needs a key: give --deid-key-env VAR or --deid-key-file FILE "
                               "(one of them)")
        if self.key_env:
            value = os.environ.get(self.key_env, "")
            if not value.strip():
                raise DeidKeyError(f"the environment variable {self.key_env} (--deid-key-env) is not set or empty")
            key = value.strip().encode("utf-8")
        else:  # exactly one of them is set (checked above)
            key_file = self.key_file or ""
            try:
                with open_url(key_file) as handle:
                    key = handle.read(1 << 16).strip()
            except OSError as exc:
                raise DeidKeyError(f"cannot read the key file {self.key_file}: {error_text(exc)}") from None
        return check_key(key)

    def deidentifier(self) -> Deidentifier:
        return Deidentifier(Profile(self.options), Pseudonyms(self.load_key()), self.allow_burned_in)


def staged_name(source_url: str) -> str:
    """The staged file's name: one per input, so that a retried bundle rewrites the same file."""
    return hashlib.sha256(source_url.encode("utf-8")).hexdigest()[:40] + ".dcm"


def deidentify_file(deidentifier: Deidentifier, instance: ValidInstance, staging: str,
                    keywords: tuple[str, ...] = (), *, source: BinaryIO | None = None,
                    mapped: tuple[str, list[tuple[int, int, int]] | None] | None = None,
                    head: bytes = b"") -> tuple[ValidInstance, list[MappingRow]]:
    """De-identify the file of ``instance`` into the folder (or object prefix) ``staging``.

    The new bytes are checked by the project's validator before they are handed on. Returns the
    staged instance (new UIDs; ``origin`` is the input) and the replacements it made. ``source``
    (the input, open), ``mapped`` and ``head``: what the walk that validated the input found
    (see :meth:`Deidentifier.rewrite`), so that it is neither opened nor walked again.

    Raises
    ------
    DeidentificationError, InvalidInstance
        The instance cannot be de-identified.
    OSError
        Reading the input or staging the output failed.
    """
    name = staged_name(instance.source)
    staging_path = local_path(staging)
    if staging_path is not None:  # written under its staged name at once: one file made per instance
        os.makedirs(staging_path, exist_ok=True)
        url = written = os.path.join(staging_path, name)
    else:  # made locally, then put into the store
        url, written = staging.rstrip("/") + "/" + name, os.path.join(tempfile.gettempdir(), f".{uuid.uuid4().hex}")
    try:
        with contextlib.ExitStack() as stack:
            if source is None:
                source = stack.enter_context(open_url(instance.url, size=instance.size))
            out = stack.enter_context(open(written, "w+b"))
            done = rewrite_checked(deidentifier, instance, source, out, url, keywords, mapped, head)
        if staging_path is None:
            fs, path = split_url(url)
            fs.put_file(written, path)
    except BaseException:
        remove_local(written)
        raise
    finally:
        if staging_path is None:
            remove_local(written)
    return done


def rewrite_checked(deidentifier: Deidentifier, instance: ValidInstance, source: BinaryIO, out: BinaryIO, url: str,
                    keywords: tuple[str, ...] = (),
                    mapped: tuple[str, list[tuple[int, int, int]] | None] | None = None,
                    head: bytes = b"") -> tuple[ValidInstance, list[MappingRow]]:
    """De-identify ``instance`` from ``source`` into ``out`` (a new file, open for reading too) and
    check the new bytes with the project's validator; return the instance it holds (at ``url``)
    and the replacements made (see :func:`deidentify_file`).
    """
    result = deidentifier.rewrite(source, instance.size, out, keywords, mapped, head)
    out.seek(0)
    # headers only: the walker walks the header from its first bytes (those the rewrite made in
    # memory, else read back) and seeks over values, reading the file where they end
    validate_part10(out, result.size, head=result.head or read_head(out, OUTPUT_HEAD))
    staged = ValidInstance(url, result.size, result.study_uid, result.series_uid, result.sop_uid,
                           result.transfer_syntax,
                           tuple(sorted((k, plain_value(v)) for k, v in result.attributes.items())),
                           None, instance.source)
    rows = [MappingRow(kind, original, pseudonym, keyword)
            for (kind, original), (pseudonym, keyword) in result.mapping.items()]
    return staged, rows


def deidentify_and_place(deidentifier: Deidentifier, instance: ValidInstance, identifier: str,
                         destination: Destination, layout: Layout, *, overwrite: bool = False,
                         dry_run: bool = False) -> tuple[Outcome | ErrorRecord, list[beam.pvalue.TaggedOutput]]:
    """De-identify a retrieved instance (a local file) and place it by its new UIDs.

    Returns the placement's result, named by ``identifier`` (the source's UIDs), and the
    outputs that go with it: the mapping rows and the ``deidentified`` outcome (none when
    de-identification failed: the result is then its failure record).
    """
    try:
        staged, rows = deidentify_file(deidentifier, instance, destination.staging_directory(), layout.keywords)
    except (DeidentificationError, InvalidInstance) as exc:
        return ErrorRecord.create(identifier, f"cannot de-identify: {exc}", Stage.DEIDENTIFY), []
    except IO_ERRORS as exc:
        return ErrorRecord.create(identifier, f"cannot de-identify: {error_text(exc)}", Stage.DEIDENTIFY), []
    try:
        result = place_instance(destination, layout, staged.values(), staged.url, staged.size,
                                overwrite=overwrite, dry_run=dry_run)
    finally:
        remove_local(staged.url)
    result = (dataclasses.replace(result, identifier=identifier) if isinstance(result, ErrorRecord)
              else result._replace(source=identifier))
    return result, [*(beam.pvalue.TaggedOutput(MAPPING, row) for row in rows),
                    beam.pvalue.TaggedOutput(OUTCOMES, Outcome(DEIDENTIFIED, staged.size, identifier, ""))]


SEEN_ROWS = 100_000  # mapping rows remembered per bundle, to send each (original, keyword) once


class _DeidentifyFn(BatchedIoFn):
    def __init__(self, settings: DeidSettings, staging: str, keywords: tuple[str, ...], threads: int,
                 mapping: bool = True) -> None:
        super().__init__(threads)
        self.settings = settings
        self.staging = staging
        self.keywords = keywords
        self.mapping = mapping
        self.deidentified = Metrics.counter(metrics.NAMESPACE, DEIDENTIFIED)

    def setup(self) -> None:
        super().setup()
        self.deidentifier = self.settings.deidentifier()
        self.progress = ProgressLog("deidentify")

    def start_bundle(self) -> None:
        self.seen: set[MappingRow] = set()

    def process(self, batch: list) -> Iterator:
        # The study, series and patient of most instances were seen in the bundle already: each
        # row goes out once per bundle (the mapping table merges what the bundles send).
        for output in super().process(batch):
            if isinstance(output, beam.pvalue.TaggedOutput) and output.tag == MAPPING:
                if output.value in self.seen:
                    continue
                if len(self.seen) >= SEEN_ROWS:
                    self.seen.clear()
                self.seen.add(output.value)
            yield output

    def work(self, instance: ValidInstance) -> list:
        try:
            staged, rows = deidentify_file(self.deidentifier, instance, self.staging, self.keywords)
        except (DeidentificationError, InvalidInstance) as exc:
            return [_failure(instance.source, f"cannot de-identify: {exc}")]
        except IO_ERRORS as exc:
            return [_failure(instance.source, f"cannot de-identify: {error_text(exc)}")]
        mapped = [beam.pvalue.TaggedOutput(MAPPING, row) for row in rows] if self.mapping else []
        return [staged, *mapped,
                beam.pvalue.TaggedOutput(OUTCOMES, Outcome(DEIDENTIFIED, staged.size, instance.source, ""))]

    def account(self, output) -> None:
        if isinstance(output, ValidInstance):
            self.deidentified.inc()
            self.progress.add(1, output.size)


def _failure(identifier: str, message: str) -> beam.pvalue.TaggedOutput:
    return beam.pvalue.TaggedOutput(FAILURES, ErrorRecord.create(identifier, message, Stage.DEIDENTIFY))


class Deidentify(beam.PTransform):
    """De-identify :class:`ValidInstance` inputs with the PS3.15 Annex E Basic Profile.

    UIDs, the Patient ID and date offsets are replaced by keyed pseudonyms (HMAC-SHA256 under
    the key ``settings`` names), the same on every worker and every run. Pixel data is copied
    as bytes, never loaded. The de-identified files go to ``staging`` (a folder or object
    prefix the writing workers can read; :class:`WriteInstances` moves them into place).

    Returns :class:`~.results.Deidentified`: ``instances`` (staged :class:`ValidInstance`, new UIDs),
    ``mapping`` (:class:`MappingRow`, each at least once; none with ``mapping=False``),
    ``outcomes`` (one ``deidentified`` per instance) and ``failures`` (identified by the
    input's URL only).

    Example::

        settings = DeidSettings(ProfileOptions(retain_longitudinal_modified_dates=True), key_env="DEID_KEY")
        deid = checked.instances | Deidentify(settings, staging="out/.staging")
        deid.instances | RouteToLayout(Layout.parse("uid"))
    """

    def __init__(self, settings: DeidSettings, staging: str, keywords: Iterable[str] = (),
                 threads: int = DEFAULT_THREADS, mapping: bool = True) -> None:
        super().__init__()
        self.settings = settings
        self.staging = staging
        self.keywords = tuple(keywords)
        self.threads = threads
        self.mapping = mapping

    def expand(self, instances: beam.PCollection) -> Deidentified:
        result = (
            instances
            | "Batch" >> batched(self.threads)
            | "Deidentify" >> beam.ParDo(_DeidentifyFn(self.settings, self.staging, self.keywords, self.threads,
                                                   self.mapping))
            .with_outputs(FAILURES, MAPPING, OUTCOMES, main=INSTANCES)
        )
        return Deidentified(result[INSTANCES], result[MAPPING], result[OUTCOMES], result[FAILURES])


class _MergeSightings(beam.CombineFn):
    """One original: its pseudonym and every keyword it was seen as."""

    def create_accumulator(self) -> tuple[str, frozenset[str]]:
        return "", frozenset()

    def add_input(self, accumulator, row: tuple[str, str]):
        return row[0], accumulator[1] | {row[1]}

    def merge_accumulators(self, accumulators):
        pseudonym, seen = "", frozenset()
        for other, keywords in accumulators:
            pseudonym, seen = pseudonym or other, seen | keywords
        return pseudonym, seen

    def extract_output(self, accumulator):
        return accumulator


def _by_original(row: MappingRow) -> tuple[tuple[str, str], tuple[str, str]]:
    return (row.kind, row.original), (row.pseudonym, row.keyword)


def _csv_line(element: tuple[tuple[str, str], tuple[str, frozenset[str]]]) -> str:
    (kind, original), (pseudonym, seen) = element
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow([kind, original, pseudonym, ";".join(sorted(seen))])
    return out.getvalue()


class _WriteMappingFn(DoFn):
    def __init__(self, merge_existing: bool = False) -> None:
        self.merge_existing = merge_existing

    def process(self, url: str, lines: list[str]) -> Iterator[int]:
        if self.merge_existing:
            lines = merge_mapping_lines(read_mapping_text(url), lines)
        header = ",".join(MAPPING_HEADER) + "\n"
        write_private_text(url, header + "".join(sorted(lines)))
        yield len(lines)


def read_mapping_text(url: str) -> str:
    """An existing mapping table ("" if there is no file yet)."""
    try:
        with open_url(url) as raw:
            return raw.read().decode("utf-8")
    except FileNotFoundError:
        return ""


def merge_mapping_lines(earlier: str, lines: list[str]) -> list[str]:
    """One row per original: the rows of this run (CSV ``lines``), and those of the ``earlier``
    table it does not repeat (``seen_as`` joined when both give the same pseudonym; this run's row
    wins otherwise)."""
    rows: dict[tuple[str, str], tuple[str, set[str]]] = {}
    earlier_rows = list(csv.reader(io.StringIO(earlier)))[1:]  # after the header
    for kind, original, pseudonym, seen in (*earlier_rows, *csv.reader(io.StringIO("".join(lines)))):
        before = rows.get((kind, original))
        keywords = set(seen.split(";")) | (before[1] if before and before[0] == pseudonym else set())
        rows[(kind, original)] = (pseudonym, keywords)
    return [_csv_line(((kind, original), (pseudonym, frozenset(seen - {""}))))
            for (kind, original), (pseudonym, seen) in rows.items()]


def write_private_text(url: str, text: str) -> None:
    """Write ``text`` to ``url``; on local disk readable by its owner only (mode 0600), atomically."""
    path = local_path(url)
    if path is None:
        fs, remote = split_url(url)
        with fs.open(remote, "w", encoding="utf-8") as out:
            out.write(text)
        return
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.partial")
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    finally:
        remove_local(temporary)


class WriteMapping(beam.PTransform):
    """Write the mapping table once per run: CSV ``identifier,original,pseudonym,seen_as``, one row
    per original Patient ID or UID (``seen_as``: the attributes it appeared in), sorted, mode 0600.
    With ``merge_existing``, the rows of a table already at ``url`` are kept (for pipelines whose
    re-runs skip what an earlier run moved).

    Example::

        deid.mapping | WriteMapping("secure/mapping.csv")
    """

    def __init__(self, url: str, merge_existing: bool = False) -> None:
        super().__init__()
        self.url = url
        self.merge_existing = merge_existing

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        lines = (
            rows
            | "KeyByOriginal" >> beam.Map(_by_original)
            | "OneRowPerOriginal" >> beam.CombinePerKey(_MergeSightings())
            | "CsvLines" >> beam.Map(_csv_line)
        )
        return (
            rows.pipeline
            | "MappingUrl" >> beam.Create([self.url])
            | "WriteMapping" >> beam.ParDo(_WriteMappingFn(self.merge_existing), beam.pvalue.AsList(lines))
        )
