"""File references and fsspec access, the same for local paths and object-store URLs."""

from __future__ import annotations

from typing import BinaryIO, NamedTuple

import fsspec
from fsspec.implementations.local import LocalFileSystem


class FileRef(NamedTuple):
    """A file found by expansion: its URL (or local path), size in bytes, and the
    MD5 (hex) its store reported in the listing, if any."""

    url: str
    size: int
    md5: str | None = None


def split_url(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem serving ``url`` and the path within it."""
    fs, path = fsspec.core.url_to_fs(url)
    return fs, path


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def scheme_of(url: str) -> str | None:
    """``"az://"`` for ``az://c/x``; ``None`` for a local path."""
    head, sep, _ = url.partition("://")
    if not sep or "/" in head or len(head) < 2:
        return None
    return None if head == "file" else head + sep


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
        return fs.open(path, "rb", block_size=block_size, cache_type="readahead", size=size)
    return fs.open(path, "rb", block_size=block_size, cache_type="readahead")
