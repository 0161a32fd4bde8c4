"""The manifest (one JSON line per instance handled) and the per-series reconciliation: pure logic.

A manifest line::

    {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "source", "destination", "size",
     "outcome": "success" | "unchanged" | "failure" | "filtered", "checksum": {"sha256": ...},
     "error": ... (failures), "stage": ... (failures), "sourceVersion": ..., "time": ...}

A reconciliation row sums the lines of one series and compares them with what the destination
holds afterwards (the SOP Instance UIDs it lists for that series).
"""

from __future__ import annotations

import csv
import dataclasses
import heapq
import io
import json
import re
from collections.abc import Iterable, Iterator
from json.encoder import encode_basestring as _string  # json's escaping (C), ensure_ascii=False

from dicom_transfer.elements import FileRef, Outcome
from dicom_transfer.errors import error_kind, redact, redact_url, utc_now_iso

SUCCESS, UNCHANGED, FAILURE, FILTERED = "success", "unchanged", "failure", "filtered"
INSTANCE_OUTCOMES = (SUCCESS, UNCHANGED, FAILURE, FILTERED)
_UID_PATH = re.compile(r"^([0-9.]+)/([0-9.]+)/([0-9.]+)$")


def safe_url(url: str) -> str:
    """``url`` without credentials (see :func:`~dicom_transfer.errors.redact`); a local path or a
    plain URL, by far the common case, is returned as is without running the regular expressions."""
    if "@" not in url and "=" not in url and "?" not in url:
        return url
    return redact_url(redact(url))


def outcome_line(outcome, time: str | None = None) -> dict | None:
    """The manifest line of an :class:`~dicom_transfer.elements.Outcome`, or None for
    an outcome that is not an instance's final one (``deidentified``)."""
    if outcome.kind not in INSTANCE_OUTCOMES:
        return None
    line = {
        "StudyInstanceUID": outcome.study, "SeriesInstanceUID": outcome.series, "SOPInstanceUID": outcome.sop,
        "source": safe_url(outcome.source), "destination": safe_url(outcome.destination),
        "size": outcome.size, "outcome": outcome.kind, "checksum": dict(outcome.checksum),
        "time": time or utc_now_iso(),
    }
    if outcome.source_version:
        line["sourceVersion"] = outcome.source_version
    return line


def failure_line(record) -> dict:
    """The manifest line of an :class:`~dicom_transfer.errors.ErrorRecord` (one per record). Its UIDs
    are those the failing stage knew, or those its identifier names (``study/series/sop``)."""
    uids = tuple(record.uids)
    if not uids:
        match = _UID_PATH.match(record.identifier)
        uids = match.groups() if match else ()
    study, series, sop = (*uids, "", "", "")[:3]
    return {
        "StudyInstanceUID": study, "SeriesInstanceUID": series, "SOPInstanceUID": sop,
        "source": record.identifier, "destination": "", "size": None, "outcome": FAILURE, "checksum": {},
        "error": record.error, "stage": record.stage, "time": record.timestamp,
    }


_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # built once: json.dumps with
# options builds an encoder per call, a third of a line's cost


def to_json_line(line: dict) -> str:
    return _JSON.encode(line)


def outcome_json(outcome, time: str) -> str | None:
    """``to_json_line(outcome_line(outcome, time))``, the same text, formatted from a template: the
    line of every instance a run handles, a quarter of the cost of a dict encoded by ``json``.
    Each string goes through ``json``'s own escaping (:func:`json.encoder.encode_basestring`, as
    ``_JSON`` does it), so that any character in a path or UID is written as ``json`` would."""
    kind, size, source, destination, study, series, sop, checksum, version = outcome
    if kind not in INSTANCE_OUTCOMES:
        return None
    sums = ",".join([f"{_string(name)}:{_string(value)}" for name, value in checksum]) if checksum else ""
    return (f'{{"StudyInstanceUID":{_string(study)},"SeriesInstanceUID":{_string(series)},'
            f'"SOPInstanceUID":{_string(sop)},"source":{_string(safe_url(source))},'
            f'"destination":{_string(safe_url(destination))},"size":{"null" if size is None else int(size)},'
            f'"outcome":{_string(kind)},"checksum":{{{sums}}},"time":{_string(time)}'
            f'{_SOURCE_VERSION + _string(version) if version else ""}}}')


_SOURCE_VERSION = ',"sourceVersion":'


def reconciled_entry(outcome) -> dict:
    """What the reconciliation needs of an instance's final :class:`Outcome` (the fields of its
    manifest line that :func:`reconcile_series` and the destination checks read)."""
    return {"outcome": outcome.kind, "SOPInstanceUID": outcome.sop, "size": outcome.size,
            "destination": safe_url(outcome.destination)}


def series_key(line: dict) -> tuple[str, str] | None:
    """``(study, series)`` of a line that names them, else None (a file that could not be read)."""
    if line.get("StudyInstanceUID") and line.get("SeriesInstanceUID"):
        return line["StudyInstanceUID"], line["SeriesInstanceUID"]
    return None


class SeriesEntries:
    """What the reconciliation needs of a series' manifest lines (outcome, SOP Instance UID, size,
    destination), gathered compactly: the entries sharing an output folder name it once, and the
    whole is one JSON text when it crosses a grouping, instead of one dictionary per instance
    (on the DirectRunner, the memory of a large run's grouping by series)."""

    __slots__ = ("folders", "count")

    def __init__(self) -> None:
        self.folders: dict[str, list] = {}  # output folder (with its "/"; "" for none) -> entries
        self.count = 0

    def add(self, line: dict) -> None:
        destination = line.get("destination")
        folder, slash, name = destination.rpartition("/") if destination else ("", "", None)
        self.folders.setdefault(folder + slash, []).append(
            (line.get("outcome"), line.get("SOPInstanceUID"), line.get("size"), name))
        self.count += 1

    def packed(self) -> str:
        return json.dumps(self.folders, separators=(",", ":"))


def unpack_series_entries(packed: Iterable[str]) -> list[dict]:
    """The entries of :meth:`SeriesEntries.packed` texts, as the lines they came from (the
    reconciled fields only)."""
    return [{"outcome": outcome, "SOPInstanceUID": sop, "size": size,
             "destination": folder + name if name is not None else None}
            for text in packed for folder, entries in json.loads(text).items()
            for outcome, sop, size, name in entries]


# -- quick check of a re-run --------------------------------------------------------------------

def reusable(line: dict) -> bool:
    """A line of an earlier run that can stand for its source next time: the instance arrived
    (``success`` or ``unchanged``), and the source's version and the output are known."""
    return (line.get("outcome") in (SUCCESS, UNCHANGED) and bool(line.get("sourceVersion"))
            and bool(line.get("destination")) and bool(line.get("SOPInstanceUID")))


def unchanged_since(line: dict, size: int, version: str | None) -> bool:
    """True if a source of ``size`` and ``version`` is the one ``line`` recorded."""
    return bool(version) and line.get("size") == size and line.get("sourceVersion") == version


def source_key(ref: FileRef) -> str:
    """What a manifest line names the source ``ref`` by (its ``source``)."""
    return safe_url(ref.url)


def unchanged_outcome(ref: FileRef, line: dict) -> Outcome:
    """The outcome of a source counted unchanged from its earlier line (no checksum: not read)."""
    return Outcome(UNCHANGED, ref.size, ref.url, line["destination"], line["StudyInstanceUID"],
                   line["SeriesInstanceUID"], line["SOPInstanceUID"], (), ref.version or "")


def match_sorted(refs: Iterable[FileRef], lines: Iterable[dict]) -> Iterator[tuple[FileRef, dict | None]]:
    """Each of ``refs`` (sorted by :func:`source_key`, each once) with the first of the earlier
    ``lines`` (:func:`reusable` ones, sorted by ``source``) it is :func:`unchanged_since`, or
    None: a merge of two sorted streams, holding the lines of one source at a time."""
    pending = iter(lines)
    line = next(pending, None)
    for ref in refs:
        key = source_key(ref)
        while line is not None and line["source"] < key:
            line = next(pending, None)
        same: list[dict] = []
        while line is not None and line["source"] == key:
            same.append(line)
            line = next(pending, None)
        yield ref, next((earlier for earlier in same if unchanged_since(earlier, ref.size, ref.version)), None)


# -- reconciliation -----------------------------------------------------------------------------

RECONCILIATION_COLUMNS = ("level", "StudyInstanceUID", "SeriesInstanceUID", "found", "selected", "stored",
                          "unchanged", "failed", "present", "missing", "extra", "complete",
                          "missingSOPInstanceUIDs", "extraSOPInstanceUIDs")


@dataclasses.dataclass
class SeriesRow:
    """One series (or, with ``level="study"``, one study's total) of the reconciliation."""

    study: str
    series: str
    found: int = 0
    selected: int = 0
    stored: int = 0
    unchanged: int = 0
    failed: int = 0
    present: int | None = None  # None: the destination was not asked (dry run, or it cannot be)
    missing: list[str] = dataclasses.field(default_factory=list)
    extra: list[str] = dataclasses.field(default_factory=list)
    level: str = "series"

    @property
    def complete(self) -> bool:
        return not self.failed and not self.missing

    def to_dict(self) -> dict:
        return {"level": self.level, "StudyInstanceUID": self.study, "SeriesInstanceUID": self.series,
                "found": self.found, "selected": self.selected, "stored": self.stored,
                "unchanged": self.unchanged, "failed": self.failed, "present": self.present,
                "missing": len(self.missing), "extra": len(self.extra), "complete": self.complete,
                "missingSOPInstanceUIDs": self.missing, "extraSOPInstanceUIDs": self.extra}


def reconcile_series(study: str, series: str, lines: Iterable[dict],
                     present: dict[str, int | None] | None, per_series: bool = True) -> SeriesRow:
    """Count the manifest ``lines`` of one series and compare them with ``present`` (SOP Instance
    UID -> size, or None when the destination does not say; ``None``: not asked).

    Missing: a selected instance (whatever its outcome) that the destination does not hold, or
    holds with another size than the one that arrived. Extra: what the destination holds for
    the series that no line of this run names (only when ``per_series``: the destination's listing
    holds this series alone, as the ``uid`` and ``azure`` layouts and QIDO-RS do).
    """
    row = SeriesRow(study, series)
    expected: dict[str, int | None] = {}
    named: set[str] = set()
    for line in lines:
        kind, sop = line.get("outcome"), line.get("SOPInstanceUID") or ""
        named.add(sop)
        row.found += 1
        if kind == FILTERED:
            continue
        row.selected += 1
        if kind == SUCCESS:
            row.stored += 1
        elif kind == UNCHANGED:
            row.unchanged += 1
        elif kind == FAILURE:
            row.failed += 1
        if sop:
            expected[sop] = line.get("size") if kind != FAILURE else expected.get(sop)
    if present is None:
        return row
    row.present = sum(1 for sop in expected if sop in present)
    row.missing = sorted(sop for sop, size in expected.items()
                         if sop not in present or (present[sop] is not None and size is not None
                                                   and present[sop] != size))
    if per_series:
        row.extra = sorted(set(present) - named)
    return row


def add_to_study(total: SeriesRow | None, row: SeriesRow) -> SeriesRow:
    """The study total ``total`` with the series ``row`` added (missing/extra UIDs are not repeated)."""
    if total is None:
        total = SeriesRow(row.study, "", level="study", present=None)
    for name in ("found", "selected", "stored", "unchanged", "failed"):
        setattr(total, name, getattr(total, name) + getattr(row, name))
    if row.present is not None:
        total.present = (total.present or 0) + row.present
    total.missing = [*total.missing, *row.missing]
    total.extra = [*total.extra, *row.extra]
    return total


def csv_header() -> str:
    return _csv_line(RECONCILIATION_COLUMNS)


def csv_row(row: dict) -> str:
    """One CSV line (no newline) of a row as :meth:`SeriesRow.to_dict` gives it; UID lists joined by spaces."""
    values = []
    for column in RECONCILIATION_COLUMNS:
        value = row[column]
        if isinstance(value, list):
            value = " ".join(value)
        elif value is None:
            value = ""
        elif isinstance(value, bool):
            value = "true" if value else "false"
        values.append(str(value))
    return _csv_line(values)


def _csv_line(values: Iterable[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(list(values))
    return out.getvalue()


def empty_section() -> dict:
    return {"series": 0, "complete": 0, "incomplete": 0, "instancesMissing": 0, "instancesExtra": 0,
            "destinationChecked": False}


def add_to_section(section: dict, row: dict) -> dict:
    """The summary's ``reconciliation`` section with one series row added."""
    section["series"] += 1
    section["complete" if row["complete"] else "incomplete"] += 1
    section["instancesMissing"] += row["missing"]
    section["instancesExtra"] += row["extra"]
    section["destinationChecked"] = section["destinationChecked"] or row["present"] is not None
    return section


def merge_sections(sections: Iterable[dict]) -> dict:
    merged = empty_section()
    for section in sections:
        for key, value in section.items():
            merged[key] = (merged[key] or value) if isinstance(value, bool) else merged[key] + value
    return merged


# -- what the report shows, added up line by line (in any order, merged from any number of parts) --

FIRST_FAILURES = 5  # per kind of failure
STUDIES_SHOWN = 500  # the least complete studies


def add_to_timeline(timeline: dict, line: dict) -> dict:
    """``{"YYYY-MM-DDTHH:MM:SS": (instances, bytes moved)}`` with ``line`` added."""
    return add_to_second(timeline, str(line.get("time", "")), line.get("outcome"), line.get("size"))


def add_to_second(timeline: dict, time: str, kind: str | None, size: int | None) -> dict:
    """:func:`add_to_timeline` of a line of ``time``, ``outcome`` ``kind`` and ``size``."""
    second = time[:19]
    count, moved = timeline.get(second, (0, 0))
    timeline[second] = (count + 1, moved + (size or 0 if kind == SUCCESS else 0))
    return timeline


def merge_timelines(timelines: Iterable[dict]) -> dict:
    merged: dict = {}
    for timeline in timelines:
        for second, (count, size) in timeline.items():
            total, moved = merged.get(second, (0, 0))
            merged[second] = (total + count, moved + size)
    return merged


def add_failure_kind(kinds: dict, line: dict) -> dict:
    """``{kind: (count, first few "source: error" lines)}`` with the failure ``line`` added: bounded."""
    kind = error_kind({"Error": line.get("error"), "Stage": line.get("stage")})
    count, first = kinds.get(kind, (0, []))
    if len(first) < FIRST_FAILURES:
        first = [*first, f"{line['source']}: {line.get('error')}"]
    kinds[kind] = (count + 1, first)
    return kinds


def merge_failure_kinds(all_kinds: Iterable[dict]) -> dict:
    merged: dict = {}
    for kinds in all_kinds:
        for kind, (count, first) in kinds.items():
            total, kept = merged.get(kind, (0, []))
            merged[kind] = (total + count, (kept + first)[:FIRST_FAILURES])
    return merged


def _incompleteness(row: dict) -> tuple:
    return (row["missing"] + row["failed"], row["StudyInstanceUID"])


def empty_overview() -> dict:
    """What the summary and the report show of the reconciliation rows: the summary's section, the
    number of studies and the ``STUDIES_SHOWN`` least complete study totals (bounded)."""
    return {"section": empty_section(), "study_count": 0, "studies": []}


def add_to_overview(overview: dict, row: dict) -> dict:
    if row["level"] == "series":
        add_to_section(overview["section"], row)
        return overview
    overview["study_count"] += 1
    studies = overview["studies"]
    studies.append(row)
    if len(studies) > 2 * STUDIES_SHOWN:
        overview["studies"] = least_complete(studies)
    return overview


def merge_overviews(overviews: Iterable[dict]) -> dict:
    overviews = list(overviews)
    return {"section": merge_sections(o["section"] for o in overviews),
            "study_count": sum(o["study_count"] for o in overviews),
            "studies": least_complete(row for o in overviews for row in o["studies"])}


def least_complete(studies: Iterable[dict]) -> list[dict]:
    return heapq.nlargest(STUDIES_SHOWN, studies, key=_incompleteness)
