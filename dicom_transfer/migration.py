"""What a migration does to one series: which instances to move, and what must hold afterwards.

Plain functions of UID sets, without I/O: the ``migrate`` pipeline asks the
destination (one paged QIDO-RS per series) which SOP Instance UIDs it holds,
moves only the others, then asks again to verify.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable


def same(uid: str) -> str:
    """UIDs as the destination holds them when nothing renames them."""
    return uid


@dataclasses.dataclass(frozen=True)
class SeriesPlan:
    """One series of the source: the instances wanted, and those the destination already holds.

    Attributes
    ----------
    study, series:
        The series' UIDs.
    wanted:
        The source's SOP Instance UIDs selected for migration, sorted.
    present:
        Those of ``wanted`` the destination holds already (``unchanged``).
    whole:
        The whole series is wanted (it was selected as a study or series), so a
        series-level WADO-RS answer holds nothing unwanted.
    """

    study: str
    series: str
    wanted: tuple[str, ...]
    present: frozenset[str]
    whole: bool

    @property
    def missing(self) -> tuple[str, ...]:
        """What must be moved, sorted."""
        return tuple(sop for sop in self.wanted if sop not in self.present)

    @property
    def fetch_whole_series(self) -> bool:
        """One series-level retrieval pays when at least half of the series is missing;
        otherwise the missing instances are retrieved one by one."""
        return self.whole and bool(self.missing) and 2 * len(self.missing) >= len(self.wanted)

    @property
    def identifier(self) -> str:
        return f"{self.study}/{self.series}"


def plan_series(study: str, series: str, selected: Iterable[tuple[str, bool]],
                held: Iterable[str], rename: Callable[[str], str] = same) -> SeriesPlan:
    """The plan for one series from its selected ``(sop, whole_series)`` pairs (as
    ``ExpandToInstances`` groups them) and the SOP Instance UIDs the destination holds.

    ``rename`` gives the UID the destination holds for a source UID (the keyed pseudonym when
    instances are de-identified on the way): a source instance is present when its new UID is.
    """
    wanted: dict[str, bool] = {}
    for sop, whole in selected:
        wanted[sop] = wanted.get(sop, False) or whole
    held = frozenset(held)
    return SeriesPlan(study, series, tuple(sorted(wanted)), frozenset(sop for sop in wanted if rename(sop) in held),
                      any(wanted.values()))


def still_missing(expected: Iterable[str], held: Iterable[str], rename: Callable[[str], str] = same) -> list[str]:
    """The ``expected`` (source) SOP Instance UIDs whose new UID the destination does not hold, sorted."""
    held = frozenset(held)
    return sorted(sop for sop in set(expected) if rename(sop) not in held)
