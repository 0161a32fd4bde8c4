"""File references and fsspec access, the same for local paths and object-store URLs."""

from __future__ import annotations

from typing import BinaryIO, NamedTuple

import fsspec
from fsspec.implementations.local import LocalFileSystem


class FileRef(NamedTuple):
    """A file found by expansion: its URL (or local path) and size in bytes."""

    url: str
    size: int


def split_url(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem serving ``url`` and the path within it."""
    fs, path = fsspec.core.url_to_fs(url)
    return fs, path


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def file_url(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """The user-facing URL of ``path`` on ``fs``: plain paths for local disk."""
    if is_local(fs):
        return path
    return fs.unstrip_protocol(path)


def local_path(url: str) -> str | None:
    """The local path ``url`` names, or None if it lives in another store."""
    if "://" not in url:  # a plain path: skip fsspec's URL parsing on the hot path
        return url
    fs, path = split_url(url)
    return path if is_local(fs) else None


def open_url(url: str, block_size: int = 256 * 1024) -> BinaryIO:
    """Open ``url`` for reading. Object stores read lazily, in ``block_size`` ranges."""
    path = local_path(url)
    if path is not None:
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    fs, path = split_url(url)
    return fs.open(path, "rb", block_size=block_size)
