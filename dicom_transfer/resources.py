"""DICOM resource selections: Google filter files and Azure export identifiers.

Both name studies, series or instances by UID:

* a Google filter-file line is ``/studies/S[/series/SE[/instances/I]]``;
* an Azure export identifier is ``S[/SE[/I]]``.

Both parse to :class:`ResourcePath`; a :class:`ResourceFilter` answers whether
an instance is selected by any of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

from dicom_transfer.uids import uid_problem


@dataclasses.dataclass(frozen=True, order=True)
class ResourcePath:
    """A study, a series of a study, or an instance of a series."""

    study: str
    series: str | None = None
    instance: str | None = None

    @property
    def level(self) -> str:
        if self.instance is not None:
            return "instance"
        return "series" if self.series is not None else "study"

    @property
    def identifier(self) -> str:
        """The Azure form ``study[/series[/sop]]``."""
        return "/".join(p for p in (self.study, self.series, self.instance) if p is not None)

    @property
    def filter_line(self) -> str:
        """The Google filter-file form ``/studies/S[/series/SE[/instances/I]]``."""
        line = f"/studies/{self.study}"
        if self.series is not None:
            line += f"/series/{self.series}"
        if self.instance is not None:
            line += f"/instances/{self.instance}"
        return line


def _checked(study: str, series: str | None, instance: str | None, source: str) -> ResourcePath:
    for name, uid in (("study", study), ("series", series), ("instance", instance)):
        if uid is None:
            continue
        problem = uid_problem(uid)
        if problem:
            raise ValueError(f"{source}: {name} UID {uid[:80]!r} is not a valid UID: {problem}")
    return ResourcePath(study, series, instance)


def parse_filter_line(line: str, where: str = "filter line") -> ResourcePath:
    """Parse one Google filter-file line.

    Raises
    ------
    ValueError
        Naming ``where`` (e.g. ``"filters.txt line 3"``) and what is wrong.
    """
    text = line.strip()
    parts = text.split("/")
    # "/studies/S/series/SE/instances/I" splits into ['', 'studies', S, 'series', SE, ...]
    keywords = ("studies", "series", "instances")
    if not text.startswith("/") or len(parts) not in (3, 5, 7) or any(
        parts[i] != keywords[(i - 1) // 2] for i in range(1, len(parts), 2)
    ):
        raise ValueError(
            f"{where}: {text[:120]!r} is not of the form "
            "/studies/STUDY_UID[/series/SERIES_UID[/instances/INSTANCE_UID]]"
        )
    uids: list[str | None] = [*parts[2::2], None, None]
    return _checked(parts[2], uids[1], uids[2], where)


def parse_identifier(text: str, where: str = "identifier") -> ResourcePath:
    """Parse one Azure export identifier ``study[/series[/sop]]``.

    Raises
    ------
    ValueError
        If it has more than three parts or a part is not a valid UID.
    """
    parts = text.strip().split("/")
    if not 1 <= len(parts) <= 3:
        raise ValueError(
            f"{where}: {text[:120]!r} is not of the form "
            "StudyInstanceUID[/SeriesInstanceUID[/SOPInstanceUID]]"
        )
    more: list[str | None] = [*parts[1:], None, None]
    return _checked(parts[0], more[0], more[1], where)


def list_lines(lines: Iterable[str], name: str) -> Iterator[tuple[str, str]]:
    """``(text, where)`` for each line of a list file (input list, identifiers, filter file) that is
    neither blank nor a ``#`` comment; ``where`` names the file and the line number for error records.

    >>> list(list_lines(["# studies", "1.2", "", "  3.4  "], "ids.txt"))
    [('1.2', 'ids.txt line 2'), ('3.4', 'ids.txt line 4')]
    """
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if text and not text.startswith("#"):
            yield text, f"{name} line {number}"


def iter_filter_file_lines(lines: Iterable[str], name: str) -> Iterator[ResourcePath]:
    """Parse a filter file's lines; blank lines and ``#`` comments are skipped.

    Raises
    ------
    ValueError
        On the first malformed line, naming ``name`` and its line number.
    """
    for text, where in list_lines(lines, name):
        yield parse_filter_line(text, where=where)


class ResourceFilter:
    """Selects instances named by study, series or instance resource paths.

    Examples
    --------
    >>> f = ResourceFilter([ResourcePath("1.2"), ResourcePath("3.4", "5.6")])
    >>> f.selects("1.2", "9", "9"), f.selects("3.4", "5.7", "9")
    (True, False)
    """

    def __init__(self, paths: Iterable[ResourcePath]) -> None:
        self._studies: set[str] = set()
        self._series: set[tuple[str, str]] = set()
        self._instances: set[tuple[str, str, str]] = set()
        for path in paths:
            if path.instance is not None and path.series is not None:
                self._instances.add((path.study, path.series, path.instance))
            elif path.series is not None:
                self._series.add((path.study, path.series))
            else:
                self._studies.add(path.study)

    def __len__(self) -> int:
        return len(self._studies) + len(self._series) + len(self._instances)

    def selects(self, study: str, series: str, instance: str) -> bool:
        return (
            study in self._studies
            or (study, series) in self._series
            or (study, series, instance) in self._instances
        )

    def selecting(self, study: str, series: str, instance: str) -> list[ResourcePath]:
        """Every path of this filter that selects the instance (at most one per level)."""
        found = []
        if study in self._studies:
            found.append(ResourcePath(study))
        if (study, series) in self._series:
            found.append(ResourcePath(study, series))
        if (study, series, instance) in self._instances:
            found.append(ResourcePath(study, series, instance))
        return found

    def paths(self) -> Iterator[ResourcePath]:
        """Every path of this filter, study paths first."""
        yield from (ResourcePath(study) for study in sorted(self._studies))
        yield from (ResourcePath(*key) for key in sorted(self._series))
        yield from (ResourcePath(*key) for key in sorted(self._instances))
