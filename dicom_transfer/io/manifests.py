"""Earlier runs' manifests: found (the newest of a pattern) and read, one line at a time."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

from dicom_transfer.errors import IO_ERRORS, error_text, redact
from dicom_transfer.io.files import file_url, open_url, scheme_of, split_url

LOG = logging.getLogger(__name__)


BATCH = 1000  # lines parsed by one call of json.loads


def read_manifest_lines(url: str) -> Iterator[dict]:
    """The lines of a manifest file, one dict at a time (streamed, ``BATCH`` lines in memory)."""
    with open_url(url) as raw:
        batch: list[bytes] = []
        for text in raw:
            if text.strip():
                batch.append(text)
                if len(batch) >= BATCH:
                    yield from _parsed(batch)
                    batch = []
        yield from _parsed(batch)


def _parsed(lines: list[bytes]) -> list:
    """The JSON objects of ``lines``, parsed as one array (half the time of a call per line, the
    keys' strings shared). Unless that gives one object per line, each line is parsed alone, to
    fail (or not) as it would alone: a truncated or broken line does. (Only lines broken so as to
    complete each other once joined would pass, as lines that were written so would: a manifest
    is trusted as far as what it says, not further.)"""
    if not lines:
        return []
    try:
        values = json.loads(b"[" + b",".join(lines) + b"]")
    except ValueError:
        values = None
    if values is not None and len(values) == len(lines) and all(type(value) is dict for value in values):
        return values
    return [json.loads(line) for line in lines]


def newest_match(pattern: str, exclude: str = "") -> str | None:
    """The most recently written file matching ``pattern`` (a glob), other than ``exclude``."""
    fs, path = split_url(pattern)
    excluded = split_url(exclude)[1] if exclude else None
    try:
        found = fs.glob(path, detail=True)
    except FileNotFoundError:
        return None
    dated = [(str(info.get("mtime") or info.get("updated") or info.get("LastModified")
                  or info.get("last_modified") or ""), name)
             for name, info in found.items() if info.get("type", "file") == "file" and name != excluded]
    if not dated:
        return None
    return file_url(fs, max(dated)[1], scheme_of(pattern))


def find_previous_manifest(pattern: str, exclude: str = "") -> str | None:
    """The newest manifest matching ``pattern`` (other than ``exclude``), announced; None if
    there is none or the store cannot be listed (then every source is read)."""
    try:
        found = newest_match(pattern, exclude)
    except IO_ERRORS as exc:
        LOG.warning("cannot look for an earlier run's manifest (%s): every source is read", error_text(exc))
        return None
    if found is not None:
        LOG.info("sources unchanged since %s are not read again (--checksum reads them all)", redact(found))
    return found


def previous_lines(url: str, exclude: str = "") -> Iterator[dict]:
    """The lines of the earlier manifest ``url``; a pattern: of its newest match (none: no line)."""
    if "*" in url:
        found = find_previous_manifest(url, exclude)
        if found is None:
            return
        url = found
    yield from read_manifest_lines(url)
