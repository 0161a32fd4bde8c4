"""DICOM UID validation (PS3.5 §9.1)."""

from __future__ import annotations

import re

MAX_UID_LENGTH = 64
# What the checks below accept, in one match: the common case (every valid UID) decided at once.
_VALID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")


def uid_problem(value: str) -> str | None:
    """Return why ``value`` is not a valid DICOM UID, or ``None`` if it is valid.

    A UID is dot-separated numeric components: digits only, no empty component,
    no leading zero in a multi-digit component, 64 characters at most.

    Examples
    --------
    >>> uid_problem("1.2.840.10008.1.2.1") is None
    True
    >>> uid_problem("1.02.3")
    "component '02' has a leading zero"
    """
    if len(value) <= MAX_UID_LENGTH and _VALID.fullmatch(value):
        return None
    if not value:
        return "it is empty"
    if len(value) > MAX_UID_LENGTH:
        return f"it has {len(value)} characters (at most {MAX_UID_LENGTH} allowed)"
    for component in value.split("."):
        if not component:
            return "it has an empty component"
        if not (component.isascii() and component.isdigit()):
            return f"component {component[:16]!r} is not made of digits 0-9"
        if len(component) > 1 and component[0] == "0":
            return f"component {component!r} has a leading zero"
    return None


def is_valid_uid(value: str) -> bool:
    """True if ``value`` is a valid DICOM UID (see :func:`uid_problem`)."""
    return uid_problem(value) is None


def check_uid(value: str, what: str = "UID") -> str:
    """Return ``value`` if it is a valid UID, else raise ``ValueError`` saying why.

    Raises
    ------
    ValueError
        With a message naming ``what`` and the reason.
    """
    problem = uid_problem(value)
    if problem is not None:
        raise ValueError(f"{what} {_shorten(value)!r} is not a valid UID: {problem}")
    return value


def _shorten(value: str, limit: int = 80) -> str:
    return value if len(value) <= limit else value[:limit] + "..."
