"""File references and fsspec access, the same for local paths and object-store URLs."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from typing import BinaryIO, cast

import fsspec
from fsspec.caching import ReadAheadCache
from fsspec.implementations.local import LocalFileSystem

from dicom_transfer.resources import list_lines
from dicom_transfer.wildcards import split_scheme

CHUNK = 1 << 20  # bytes per read when streaming a file or an answer through the worker


def split_url(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem serving ``url`` and the path within it."""
    fs, path = fsspec.core.url_to_fs(url)
    return fs, path


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def scheme_of(url: str) -> str | None:
    """``"az://"`` for ``az://c/x``; ``None`` for a local path (``file://`` URLs included)."""
    scheme, _ = split_scheme(url)
    return None if scheme in ("", "file://") else scheme


def file_url(fs: fsspec.AbstractFileSystem, path: str, scheme: str | None = None) -> str:
    """The user-facing URL of ``path`` on ``fs``: plain paths for local disk, and the
    scheme the user wrote (``az://`` rather than ``abfs://``) for object stores."""
    if is_local(fs):
        return path
    if scheme:
        return scheme + path.lstrip("/")
    return fs.unstrip_protocol(path)


def local_path(url: str) -> str | None:
    """The local path ``url`` names, or None if it lives in another store."""
    if "://" not in url:  # a plain path: skip fsspec's URL parsing on the hot path
        return url
    fs, path = split_url(url)
    return path if is_local(fs) else None


def open_url(url: str, block_size: int = 256 * 1024, size: int | None = None) -> BinaryIO:
    """Open ``url`` for reading. Object stores read lazily, in ``block_size`` ranges;
    a known ``size`` saves the metadata request."""
    path = local_path(url)
    if path is not None:
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    fs, path = split_url(url)
    if size is not None:
        return cast(BinaryIO, RangedObject(fs, path, size, block_size))  # read/seek/tell/close of a file
    return fs.open(path, "rb", block_size=block_size, cache_type="readahead")


def read_list_file(url: str, errors: str = "strict", stdin: bool = False) -> Iterator[tuple[str, str]]:
    """``(text, where)`` for each entry of a list file (``--input-list``, ``--identifiers-file``,
    ``--filter-file``): blank lines and ``#`` comments skipped.

    ``stdin``: ``-`` is standard input, as ``gsutil -I`` (only for what the launcher reads itself:
    workers have no such input). ``errors``: how bytes that are not UTF-8 are decoded (the checks
    before a run refuse them; a worker reading the same file later replaces them, and the line is
    then refused as malformed).

    Raises
    ------
    OSError, UnicodeDecodeError
    """
    if stdin and url == "-":
        yield from list_lines(sys.stdin, "standard input")
        return
    with open_url(url) as raw:
        yield from list_lines((line.decode("utf-8", errors) for line in raw), url)


class RangedObject(io.RawIOBase):
    """A read-only, seekable view of a stored object of known ``size``.

    A read that the read-ahead cache cannot answer is one ranged GET
    (``fs.cat_file``) of what was asked plus ``block_size``. Opening the object
    through fsspec instead makes a metadata request first (gcsfs asks for the
    object and whether it is a directory: two extra requests per file wherever
    the listing that found it is not cached, i.e. on every real runner's worker).
    """

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, size: int, block_size: int) -> None:
        super().__init__()
        self.size = size
        self.position = 0
        self.cache = ReadAheadCache(block_size, lambda start, end: fs.cat_file(path, start=start, end=end), size)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self.position = base + offset
        return self.position

    def read(self, size: int = -1) -> bytes:
        end = self.size if size is None or size < 0 else min(self.size, self.position + size)
        data = self.cache._fetch(self.position, end) if end > self.position else b""
        self.position += len(data)
        return data

    def readall(self) -> bytes:
        return self.read()

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)
