"""DIMSE vocabulary as plain logic: peer addresses, AE titles, status codes, date ranges,
and the grouping of presentation contexts (no networking here; see ``io.dimse``)."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import re
from collections.abc import Iterable, Iterator

MAX_CONTEXTS = 128  # presentation contexts per association (odd IDs 1..255, PS3.8 §9.3.2.2)
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # 16 printable characters, no backslash
_ADDRESS = re.compile(r"^(?:dimse://)?(?:(?P<ae>[^@]+)@)?(?P<host>\[[^\]]+\]|[^:@/]+):(?P<port>\d+)/?$")

SUCCESS, WARNING, FAILURE, PENDING, CANCEL = "success", "warning", "failure", "pending", "cancel"
UNCHANGED = "unchanged"  # a C-STORE answered "duplicate SOP instance"
DUPLICATE_SOP_INSTANCE = 0x0111


@dataclasses.dataclass(frozen=True)
class PeerAddress:
    """Where a DICOM application entity listens: ``dimse://AE@host:port``."""

    host: str
    port: int
    ae_title: str

    def __str__(self) -> str:
        return f"dimse://{self.ae_title}@{self.host}:{self.port}"


def check_ae_title(title: str, what: str = "AE title") -> str:
    """``title`` stripped, if it is a valid AE title (1-16 characters of the default
    character repertoire, no backslash, not only spaces).

    Raises
    ------
    ValueError
        Saying what is wrong.
    """
    stripped = title.strip()
    if not stripped or not _AE_TITLE.match(stripped):
        raise ValueError(f"{what} {title[:40]!r} is not a valid AE title: 1-16 printable ASCII "
                         "characters, no backslash")
    return stripped


def parse_peer_address(text: str, default_ae: str | None = None) -> PeerAddress:
    """Parse ``dimse://AE@host:port`` (the scheme is optional: ``AE@host:port``).

    ``default_ae`` is the called AE title when the text names none.

    Raises
    ------
    ValueError
        If the text is not of that form, the port is out of range or the AE title is invalid.

    Examples
    --------
    >>> parse_peer_address("dimse://ORTHANC@127.0.0.1:4242")
    PeerAddress(host='127.0.0.1', port=4242, ae_title='ORTHANC')
    """
    match = _ADDRESS.match(text.strip())
    if not match:
        raise ValueError(f"{text[:80]!r} is not of the form dimse://AE_TITLE@HOST:PORT")
    port = int(match.group("port"))
    if not 0 < port < 65536:
        raise ValueError(f"{text[:80]!r}: port {port} is out of range")
    title = match.group("ae") or default_ae
    if title is None:
        raise ValueError(f"{text[:80]!r} names no AE title: use dimse://AE_TITLE@HOST:PORT")
    return PeerAddress(match.group("host").strip("[]"), port, check_ae_title(title, "called AE title"))


def parse_listen_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``:PORT``, meaning all interfaces) where a storage SCP listens.

    Raises
    ------
    ValueError
        If it is not of that form.
    """
    host, _, port = text.strip().rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text[:80]!r} is not of the form HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


# -- status codes (PS3.7 Annex C, PS3.4 Annex B and C) -----------------------------------------

_NAMED = {
    0x0000: "success",
    0x0001: "warning: requested optional attributes are not supported",
    0x0107: "warning: attribute list error",
    0x0110: "processing failure",
    0x0111: "duplicate SOP instance",
    0x0112: "no such SOP instance",
    0x0117: "invalid object instance",
    0x0122: "SOP class not supported",
    0x0124: "refused: not authorized",
    0x0210: "duplicate invocation",
    0x0211: "unrecognized operation",
    0x0212: "mistyped argument",
    0xA700: "refused: out of resources",
    0xA701: "refused: out of resources (unable to calculate the number of matches)",
    0xA702: "refused: out of resources (unable to perform sub-operations)",
    0xA801: "refused: move destination unknown",
    0xA900: "error: identifier does not match SOP class",
    0xB000: "warning: sub-operations completed with one or more failures or warnings",
    0xB006: "warning: elements discarded",
    0xB007: "warning: data set does not match SOP class",
    0xC000: "error: cannot understand",
    0xFE00: "canceled",
    0xFF00: "pending",
    0xFF01: "pending (optional keys not supported)",
}


def status_category(status: int) -> str:
    """``success``, ``warning``, ``failure``, ``pending`` or ``cancel`` for a DIMSE status code."""
    if status == 0x0000:
        return SUCCESS
    if status in (0xFF00, 0xFF01):
        return PENDING
    if status == 0xFE00:
        return CANCEL
    if status in (0x0001, 0x0107, 0x0116) or 0xB000 <= status <= 0xBFFF:
        return WARNING
    return FAILURE


def status_text(status: int) -> str:
    """``0xA700 (refused: out of resources)``: the code and, when known, what it means."""
    name = _NAMED.get(status)
    if name is None:
        if 0xA700 <= status <= 0xA7FF:
            name = "refused: out of resources"
        elif 0xA900 <= status <= 0xA9FF:
            name = "error: data set does not match SOP class"
        elif 0xC000 <= status <= 0xCFFF:
            name = "error: cannot understand"
        elif 0xB000 <= status <= 0xBFFF:
            name = "warning"
    return f"0x{status:04X}" + (f" ({name})" if name else "")


def store_outcome(status: int) -> str:
    """What a C-STORE status means for the instance sent: ``success``, ``warning`` (stored all
    the same), ``unchanged`` (the PACS holds it already: 0x0111) or ``failure``."""
    if status == DUPLICATE_SOP_INSTANCE:
        return UNCHANGED
    category = status_category(status)
    return category if category in (SUCCESS, WARNING) else FAILURE


# -- study dates --------------------------------------------------------------------------------

def _date(text: str, what: str) -> _dt.date:
    try:
        return _dt.datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a date YYYYMMDD") from None


def parse_date_range(text: str) -> tuple[_dt.date, _dt.date]:
    """``YYYYMMDD-YYYYMMDD`` (inclusive) or one day ``YYYYMMDD``.

    Raises
    ------
    ValueError
        If a date is malformed or the range ends before it starts.
    """
    first, _, last = text.strip().partition("-")
    start = _date(first, "start date")
    end = _date(last, "end date") if last else start
    if end < start:
        raise ValueError(f"date range {text!r} ends before it starts")
    return start, end


def date_chunks(start: _dt.date, end: _dt.date, days: int) -> Iterator[str]:
    """DICOM date-range matching values covering ``start``..``end`` in chunks of ``days``
    (``20240101-20240107``, ...), so that no single C-FIND answer holds an archive."""
    step = _dt.timedelta(days=max(1, days))
    current = start
    while current <= end:
        last = min(current + step - _dt.timedelta(days=1), end)
        first_text, last_text = current.strftime("%Y%m%d"), last.strftime("%Y%m%d")
        yield first_text if first_text == last_text else f"{first_text}-{last_text}"
        current = last + _dt.timedelta(days=1)


# -- presentation contexts ----------------------------------------------------------------------

def group_contexts(pairs: Iterable[tuple[str, str]], reserved: int = 0) -> list[list[tuple[str, str]]]:
    """Split distinct ``(SOP class, transfer syntax)`` pairs into groups that each fit in one
    association (``MAX_CONTEXTS`` less ``reserved`` contexts for other services), keeping a
    SOP class's pairs together where they fit."""
    limit = MAX_CONTEXTS - reserved
    by_class: dict[str, list[str]] = {}
    for sop_class, syntax in pairs:
        syntaxes = by_class.setdefault(sop_class, [])
        if syntax not in syntaxes:
            syntaxes.append(syntax)
    groups: list[list[tuple[str, str]]] = [[]]
    for sop_class in sorted(by_class):
        wanted = [(sop_class, syntax) for syntax in by_class[sop_class]]
        if len(groups[-1]) + len(wanted) > limit and groups[-1]:
            groups.append([])
        for pair in wanted:
            if len(groups[-1]) >= limit:
                groups.append([])
            groups[-1].append(pair)
    return [group for group in groups if group]
