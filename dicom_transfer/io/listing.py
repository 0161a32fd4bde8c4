"""List the files that a wildcard pattern matches, listing no more than needed.

Listing starts at the pattern's longest literal directory prefix. A pattern
whose wildcards sit in one component lists that one directory; ``**``
patterns list recursively below their literal prefix.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import fsspec

from dicom_transfer.elements import FileRef
from dicom_transfer.io.checksums import md5_hex
from dicom_transfer.io.files import file_url, is_local, scheme_of, split_url
from dicom_transfer.io.objectstore import iter_objects, local_files
from dicom_transfer.wildcards import Pattern, component_matches, directory_pattern, has_wildcard


class NotAFile(Exception):
    """A pattern's last component matched a directory."""


def list_pattern(pattern: Pattern) -> Iterator[FileRef | NotAFile]:
    """Yield a :class:`FileRef` per matching file, in sorted order.

    A directory matched by the last component of a non-recursive pattern is
    yielded as :class:`NotAFile` so that the caller can report it. Errors of
    the store (permission denied, unreachable) propagate as ``OSError``.
    """
    fs, root = split_url(pattern.root or ".")
    scheme = scheme_of(pattern.text)
    found: Iterator[Found | NotAFile]
    if pattern.literal:
        found = _literal(fs, root, pattern)
    elif pattern.is_recursive:
        found = _recursive(fs, root, pattern)
    else:
        found = _by_components(fs, root, pattern.components)
    local, local_fs = scheme is None, is_local(fs)
    for item in found:  # report URLs with the scheme the user wrote (az://, not abfs://)
        if isinstance(item, NotAFile):
            yield NotAFile(file_url(fs, item.args[0], scheme))
            continue
        path, size, md5, version = item
        yield FileRef(path if local_fs else file_url(fs, path, scheme), size, md5,
                      version or _version(path, md5, local))


def _version(path: str, md5: str | None, local: bool) -> str | None:
    """A local file's modification time (ns); the MD5 an object store lists (content, not time)."""
    if md5:
        return f"md5:{md5}"
    if local:
        try:
            return str(os.stat(path).st_mtime_ns)
        except OSError:
            return None
    return None


# (path, size, MD5 the store lists or None, version if the listing gave it: see FileRef.version)
Found = tuple[str, int, str | None, str | None]


def _entry_path(entry: dict) -> str:
    return entry["name"].rstrip("/")


def _literal(fs: fsspec.AbstractFileSystem, root: str, pattern: Pattern) -> Iterator[Found]:
    try:
        info = fs.info(root)
    except FileNotFoundError:
        return
    if info["type"] == "directory":
        yield from _recursive(fs, root, directory_pattern(pattern))
    else:
        yield root, int(info["size"]), md5_hex(info), None


def _recursive(fs: fsspec.AbstractFileSystem, root: str, pattern: Pattern) -> Iterator[Found]:
    base = root.rstrip("/") + "/"
    start, matches = len(base), pattern.relative_matcher()
    if is_local(fs):  # the size and the modification time from one stat
        for path, status in local_files(base.rstrip("/") or "/"):
            if path.startswith(base) and matches(path[start:]):
                yield path, status.st_size, None, str(status.st_mtime_ns)
        return
    try:
        for path, size, md5 in iter_objects(fs, base):
            if path.startswith(base) and matches(path[start:]):
                yield path, size, md5, None
    except FileNotFoundError:
        return


def _by_components(fs: fsspec.AbstractFileSystem, root: str,
                   components: tuple[str, ...]) -> Iterator[Found | NotAFile]:
    directories = [root]
    for depth, component in enumerate(components):
        last = depth == len(components) - 1
        next_directories = []
        for directory in directories:
            if not has_wildcard(component) and not last:
                next_directories.append(f"{directory.rstrip('/')}/{component}")
                continue
            try:
                entries = fs.ls(directory, detail=True)
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in sorted(entries, key=lambda e: e["name"]):
                path = _entry_path(entry)
                name = path.rsplit("/", 1)[-1]
                if not component_matches(component, name):
                    continue
                if not last:
                    if entry["type"] == "directory":
                        next_directories.append(path)
                elif entry["type"] == "directory":
                    yield NotAFile(path)
                else:
                    yield path, int(entry["size"]), md5_hex(entry), None
        directories = next_directories
