"""What a destination held of a series, asked while a run still sends the others: pure logic.

A run's reconciliation asks the destination which instances each series holds once everything
has been sent; Orthanc answers an instance-level QIDO-RS by reading every stored file of the
series, a cost that then comes after the last request. The store step can ask instead as soon
as a series has stopped arriving and its requests are answered, while the other series are
still being sent. Its answer travels as a :class:`HeldFingerprint` (a count and a digest, not
the UIDs: a few bytes per series, whatever its size) and settles the series' reconciliation
only if it names exactly the instances the manifest expects there; any other answer (asked too
early, an instance missing, one the run did not send) leaves the reconciliation to ask again
then, as it always did.

Example::

    progress = SeriesProgress()
    progress.sending({key}); ...; progress.answered({key})
    for key in progress.quiet(keys_of_the_latest_batch): ask(key)
    for key in progress.quiet(set(), last=True): ask(key)  # at the end of a bundle
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
from collections.abc import Iterable

from dicom_transfer.manifest import FILTERED

SeriesKey = tuple[str, str]  # (StudyInstanceUID, SeriesInstanceUID)


@dataclasses.dataclass(frozen=True)
class HeldFingerprint:
    """The SOP Instance UIDs a destination held in one series: how many, and a SHA-256 of them
    (sorted, one per line)."""

    count: int
    digest: str

    @classmethod
    def of(cls, sop_uids: Iterable[str]) -> HeldFingerprint:
        uids = sorted(set(sop_uids))
        return cls(len(uids), hashlib.sha256("\n".join(uids).encode("utf-8")).hexdigest())


def expected_uids(lines: Iterable[dict]) -> set[str]:
    """The SOP Instance UIDs the destination should hold after a run, from the series' manifest
    ``lines``: every selected instance, whatever its outcome (as ``manifest.reconcile_series``)."""
    return {sop for line in lines if line.get("outcome") != FILTERED and (sop := line.get("SOPInstanceUID"))}


def present_if_exact(lines: Iterable[dict], answers: Iterable[HeldFingerprint]) -> dict[str, int | None] | None:
    """What the destination holds of the series (UID -> unknown size), if one of the earlier
    ``answers`` names exactly the instances the ``lines`` expect; None: ask the destination."""
    answers = list(answers)
    if not answers:
        return None
    expected = expected_uids(lines)
    if HeldFingerprint.of(expected) not in answers:
        return None
    return dict.fromkeys(expected)


class SeriesProgress:
    """Which series a store step may ask about while it sends the others: those not in the
    latest batch, with no request in flight, not asked yet; at the end of a bundle, as their
    requests are answered, those sent to since they were asked, or never asked
    (:meth:`quiet`). Each series is asked at most once before the end of a bundle: input that
    interleaves series costs at most one early question per series that turns out too early."""

    def __init__(self) -> None:
        self.in_flight: collections.Counter[SeriesKey] = collections.Counter()
        self.asked: set[SeriesKey] = set()
        self.since_asked: set[SeriesKey] = set()  # sent to, and not asked since

    def sending(self, keys: Iterable[SeriesKey]) -> None:
        """A request with instances of ``keys`` leaves."""
        for key in keys:
            self.in_flight[key] += 1
            self.since_asked.add(key)

    def answered(self, keys: Iterable[SeriesKey]) -> None:
        """The request with instances of ``keys`` has its outcomes."""
        for key in keys:
            self.in_flight[key] -= 1
            if not self.in_flight[key]:
                del self.in_flight[key]

    def quiet(self, latest: set[SeriesKey], last: bool = False) -> list[SeriesKey]:
        """The series to ask about now (marked asked), given the keys of the latest batch; ``last``:
        no batch follows (the end of a bundle), so every series sent to since it was asked, its
        requests answered, is asked about (again, if it was asked too early)."""
        ready = sorted(key for key in self.since_asked
                       if key not in latest and key not in self.in_flight and (last or key not in self.asked))
        self.asked.update(ready)
        self.since_asked.difference_update(ready)
        return ready
