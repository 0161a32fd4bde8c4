"""The elements that flow between the steps of every pipeline, in one place.

- :class:`FileRef`: a file found by expansion (``ExpandPatterns``' output);
- :class:`ValidInstance`: a validated instance (``ReadAndValidate``' output, the input of every
  destination);
- :class:`Outcome`: what became of one instance, tagged ``OUTCOMES``, counted into the summary and
  written into the manifest;
- and :class:`~dicom_transfer.errors.ErrorRecord`, tagged ``FAILURES``, in ``errors.py``.

Plain named tuples, without Beam: the io layer reads and writes them too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from dicom_transfer.metrics import SUCCESS


class FileRef(NamedTuple):
    """A file found by expansion: its URL (or local path), size in bytes, and the
    MD5 (hex) its store reported in the listing, if any."""

    url: str
    size: int
    md5: str | None = None
    # What says the file has not changed without reading it: a local file's modification time
    # (ns), or the MD5 its store lists (``md5:<hex>``); None when the listing gives neither.
    version: str | None = None


class ValidInstance(NamedTuple):
    """A validated instance: where it is and what identifies it."""

    url: str
    size: int
    study_uid: str
    series_uid: str
    sop_uid: str
    transfer_syntax: str
    attributes: tuple[tuple[str, object], ...] = ()
    md5: str | None = None  # as the source store reported it, if it keeps one
    # Set when ``url`` is a staged file this run made from the input at ``origin`` (a
    # de-identified copy): it is moved into place, then removed, and reports name ``origin``.
    origin: str | None = None
    source_version: str | None = None  # as the listing gave it (see FileRef.version)

    @property
    def source(self) -> str:
        """The input this instance came from, as reports name it."""
        return self.origin or self.url

    @property
    def uids(self) -> tuple[str, str, str]:
        """``(study, series, sop)``, as error records carry them for the manifest."""
        return self.study_uid, self.series_uid, self.sop_uid

    def values(self) -> dict[str, object]:
        """Attribute values for layouts, UIDs included."""
        return {
            **dict(self.attributes),
            "StudyInstanceUID": self.study_uid,
            "SeriesInstanceUID": self.series_uid,
            "SOPInstanceUID": self.sop_uid,
        }


OUTCOMES = "outcomes"
BYTES_WRITTEN = "bytesWritten"  # the summary counter of the bytes of successful outcomes


class Outcome(NamedTuple):
    """What happened to one instance: ``success``, ``unchanged`` or ``filtered``, with its size.

    The UIDs, the checksum and the source's version are what the manifest records (empty where
    a stage does not know them). ``checksum`` holds only checksums that were actually checked:
    ``(("sha256", hex),)`` computed from the bytes as they passed through the worker, or the one a
    store verified for a server-side copy (``("md5", hex)``, ``("crc32c", ...)``).
    ``source_version`` is what says the source is unchanged without reading it (a local file's
    modification time in ns, or the MD5 its store lists), for quick re-runs.
    """

    kind: str
    size: int
    source: str
    destination: str
    study: str = ""
    series: str = ""
    sop: str = ""
    checksum: tuple[tuple[str, str], ...] = ()
    source_version: str = ""


def instance_outcome(kind: str, instance: ValidInstance, destination: str, verified_md5: bool = False,
                     sha256: str | None = None) -> Outcome:
    """The outcome of a :class:`ValidInstance`, with its UIDs
    and source version. ``verified_md5``: the store compared the instance's MD5 (a copy between
    object stores); ``sha256``: the digest of the bytes as they passed through this worker."""
    checksum: tuple[tuple[str, str], ...] = ()
    if sha256:
        checksum = (("sha256", sha256),)
    elif verified_md5 and instance.md5:
        checksum = (("md5", instance.md5),)
    return Outcome(kind, instance.size, instance.source, destination, instance.study_uid, instance.series_uid,
                   instance.sop_uid, checksum, instance.source_version or "")


def count_outcome(counts: dict[str, int], kind: str, size: int) -> None:
    """Add one outcome to ``counts`` (per kind, and ``bytesWritten`` for successes), as the
    summary's counter shows them."""
    counts[kind] = counts.get(kind, 0) + 1
    if kind == SUCCESS:
        counts[BYTES_WRITTEN] = counts.get(BYTES_WRITTEN, 0) + size


def merge_counts(all_counts: Iterable[dict[str, int]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for counts in all_counts:
        for key, value in counts.items():
            merged[key] = merged.get(key, 0) + value
    return merged
