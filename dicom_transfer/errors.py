"""The one error-record type that every stage emits, and its errors.log form.

Every stage of every pipeline sends failed inputs to a tagged ``failures``
output as :class:`ErrorRecord` values. :func:`to_errors_log_line` is the only
place that turns them into the JSON lines of ``errors.log`` (the Azure DICOM
export format: ``{"Timestamp", "Identifier", "Error"}``, plus ``Stage``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from urllib.parse import urlsplit, urlunsplit

from dicom_transfer.vocabulary import Stage

FAILURES = "failures"
"""Tag of the dead-letter output of every transform in this package."""


_SECOND: tuple[int, str] = (-1, "")  # the last second formatted, and its text


def utc_now_iso() -> str:
    """Current time as ISO-8601 UTC with a ``Z`` suffix (millisecond precision).

    Called once per manifest line: the date and time of day are formatted once per second.
    """
    global _SECOND
    now = time.time()
    second, text = _SECOND
    if int(now) != second:
        second = int(now)
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _SECOND = (second, text)  # one assignment: threads see either pair whole
    return f"{text}.{int((now - second) * 1000):03d}Z"


@dataclasses.dataclass(frozen=True)
class ErrorRecord:
    """One input that could not be transferred.

    Attributes
    ----------
    identifier:
        What failed: a source URL, a pattern, a filter-file line or a DICOM
        identifier (``study[/series[/sop]]``). Credentials are removed.
    error:
        Why, in one sentence a user can act on.
    stage:
        Which stage failed (:class:`~dicom_transfer.vocabulary.Stage`).
    timestamp:
        When, ISO-8601 UTC.
    """

    identifier: str
    error: str
    stage: Stage
    timestamp: str = dataclasses.field(default_factory=utc_now_iso)
    # (study, series, sop) of the instance, when the failing stage knew them (for the manifest)
    uids: tuple[str, ...] = ()

    @classmethod
    def create(cls, identifier: str, error: str, stage: Stage | str, uids: tuple[str, ...] = ()) -> ErrorRecord:
        """Build a record with credentials scrubbed from identifier and message; ``uids``: the
        instance's (study, series, sop) when the failing stage knew them (for the manifest).

        Raises ValueError for a stage that is not a :class:`Stage` (a bug, not an input's fault).
        """
        return cls(redact(identifier), redact(error), Stage(stage), uids=uids)


def to_errors_log_line(record: ErrorRecord) -> str:
    """The errors.log JSON line for ``record`` (no trailing newline)."""
    return json.dumps(
        {
            "Timestamp": record.timestamp,
            "Identifier": record.identifier,
            "Error": record.error,
            "Stage": str(record.stage),
        },
        ensure_ascii=False,
    )


def error_kind(record: dict) -> str:
    """The kind of an errors.log record, for grouping: ``truncated`` for "invalid DICOM
    (truncated): ...", ``exists with different content`` for a conflict, else the stage."""
    error = str(record.get("Error", ""))
    if error.startswith("invalid DICOM (") and ")" in error:
        return error[len("invalid DICOM ("):error.index(")")]
    if "exists with different content" in error:
        return "exists with different content"
    return str(record.get("Stage") or "error")


_USER_INFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
_SECRET_QUERY = re.compile(
    r"(?i)\b(sig|se|sv|sp|spr|srt|ss|st|skoid|sktid|skt|ske|sks|skv|sr|"
    r"X-Amz-[A-Za-z-]+|X-Goog-[A-Za-z-]+|access_token|token|key|signature|"
    r"AccountKey|SharedAccessSignature|password)=([^&;\s\"']*)"
)


IO_ERRORS = (Exception,)
"""What a storage operation may raise: ``OSError`` from files and fsspec, and each
cloud SDK's own types (``azure.core.exceptions.HttpResponseError``...). Caught per
element, so that one failure becomes one record instead of stopping the run."""


# Exceptions that mean a bug in this product (or in a library), not a bad input or a storage failure.
# They still become a record (one bad element must not stop a run of millions), but their
# traceback is logged once per kind and place, so that a bug is not hidden as tidy records.
PROGRAMMING_ERRORS = (AttributeError, TypeError, NameError, AssertionError, IndexError, KeyError,
                      ZeroDivisionError, RecursionError, NotImplementedError)
_REPORTED_BUGS: set[str] = set()
INTERNAL_ERROR = "internal error: "  # how the record of a bug begins; such a run's status is "failed"


class WorkerDied(RuntimeError):
    """A worker process on this machine (:mod:`~dicom_transfer.io.processes`) ended while it had
    work: the run cannot go on without it."""


def already_reported(bug: str) -> bool:
    """Whether the traceback of ``bug`` (its type and place) was logged already; it counts as
    logged from now on. A worker process's log records pass here too, in its launcher
    (:mod:`~dicom_transfer.io.processes`), so that a run logs each bug once."""
    if bug in _REPORTED_BUGS:
        return True
    _REPORTED_BUGS.add(bug)
    return False


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-blank line of an exception's message (SDK messages run to many lines of
    request dumps), at most ``limit`` characters; the exception's type name when it says nothing."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]


def error_text(exc: BaseException) -> str:
    """One line saying what went wrong, for an error record (a bug's traceback is logged once)."""
    if isinstance(exc, PROGRAMMING_ERRORS):
        frame = exc.__traceback__
        while frame is not None and frame.tb_next is not None:
            frame = frame.tb_next
        place = f"{frame.tb_frame.f_code.co_filename}:{frame.tb_lineno}" if frame else "?"
        bug = f"{type(exc).__name__} at {place}"
        if not already_reported(bug):
            logging.getLogger("dicom_transfer").error(
                "internal error (a bug: please report it with this traceback)", exc_info=exc, extra={"bug": bug})
        return f"{INTERNAL_ERROR}{type(exc).__name__}: {redact(first_line(exc, 1000))}"
    text = getattr(exc, "strerror", None) or (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, OSError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def redact(text: str) -> str:
    """Remove credentials from URLs and connection strings inside ``text``.

    Strips ``user:password@`` from URLs and blanks the values of query or
    connection-string parameters that carry secrets (SAS ``sig``, AWS/GCS
    signed-URL parameters, ``AccountKey``, tokens).
    """
    if "@" not in text and "=" not in text:  # what both patterns need (most texts: a plain path)
        return text
    text = _USER_INFO.sub(r"\g<scheme>***@", text)
    return _SECRET_QUERY.sub(lambda m: f"{m.group(1)}=***", text)


def redact_url(url: str) -> str:
    """``url`` without user info and without any query string."""
    parts = urlsplit(url)
    if not parts.scheme or len(parts.scheme) == 1:  # local path, or a Windows drive
        return url
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
