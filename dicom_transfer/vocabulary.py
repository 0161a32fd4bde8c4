"""The words the reports are written in: stages that fail, and what became of each instance.

Every error record names a :class:`Stage`; every per-instance outcome and every counter of the
summary is a :class:`Kind`. Both are ``str`` enums, so they are written into errors.log, the summary
and Beam's counters as their plain values (``"write"``, ``"success"``) and compare equal to them.
"""

from __future__ import annotations

import enum


class _StrEnum(str, enum.Enum):
    """``enum.StrEnum`` (Python 3.11) for Python 3.10 too: members are their values as text."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class Stage(_StrEnum):
    """Where an instance (or a pattern, a list line, a study) failed: the ``Stage`` of errors.log."""

    EXPAND = "expand"  # a pattern, a list or filter line, a study or series that could not be listed
    READ = "read"  # the source's bytes could not be read
    VALIDATE = "validate"  # not a valid Part-10 instance (malformed, truncated, bad UID)
    FILTER = "filter"  # a filter-file line that selected nothing (with --strict)
    DEIDENTIFY = "deidentify"  # the de-identification profile could not be applied
    ROUTE = "route"  # the layout could not place it (a missing or unusable attribute)
    RETRIEVE = "retrieve"  # WADO-RS, C-GET or C-MOVE did not deliver it
    COMPARE = "compare"  # the destination could not be asked what it holds
    WRITE = "write"  # it could not be written to the destination (or conflicts with what is there)
    STORE = "store"  # STOW-RS or C-STORE did not store it
    VERIFY = "verify"  # stored, but the destination does not hold it as sent


class Kind(_StrEnum):
    """What became of one instance; the counters of the summary (Google's ``success``/``failure``)."""

    SUCCESS = "success"  # transferred
    UNCHANGED = "unchanged"  # the destination already held the same bytes
    FAILURE = "failure"  # see its error record
    FILTERED = "filtered"  # valid, but not selected by the filter file
