"""The per-instance outcome record, counted into the summary and written into the manifest."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from dicom_transfer.metrics import SUCCESS

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


def instance_outcome(kind: str, instance, destination: str, verified_md5: bool = False,
                     sha256: str | None = None) -> Outcome:
    """The outcome of a :class:`~dicom_transfer.transforms.validate.ValidInstance`, with its UIDs
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
