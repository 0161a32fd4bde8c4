"""Write instances under a destination atomically and idempotently.

Local disk: files are created atomically (see :mod:`dicom_transfer.io.atomic`),
so an interrupted run never leaves a partial file under a final name, and each
carries its :class:`Provenance` (which run wrote it, from which input). Object
stores: a put only becomes visible once complete; copies are verified (see
:mod:`dicom_transfer.io.objectstore`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
from collections.abc import Iterator
from typing import BinaryIO, NamedTuple

from dicom_transfer import metrics
from dicom_transfer.io.atomic import (
    DestinationExists,
    check_size,
    commit,
    copy_contents,
    label_of,
    link_unnamed,
    set_label,
    write_bytes,
    write_file,
)
from dicom_transfer.io.checksums import info_of, md5_hex, same_by_checksum, stream
from dicom_transfer.io.files import CHUNK, file_url, is_local, local_path, open_url, scheme_of, split_url
from dicom_transfer.io.objectstore import copy_into, iter_objects


class Provenance(NamedTuple):
    """Which run wrote an output, and from which input (a local output carries it)."""

    run: str
    source: str

    def encode(self) -> bytes:
        return f"{self.run}\n{self.source}".encode()

    @classmethod
    def decode(cls, label: bytes | None) -> Provenance | None:
        run, newline, source = (label or b"").decode("utf-8", "replace").partition("\n")
        return cls(run, source) if newline else None


class ExistsWithOtherContent(Exception):
    """The target exists with different bytes, and is not to be replaced (overwriting was
    not asked for, or this very run wrote it). ``written_from``: its :class:`Provenance`, if known."""

    def __init__(self, target: str, written_from: Provenance | None = None) -> None:
        super().__init__(target)
        self.written_from = written_from


PLACED, UNCHANGED = metrics.SUCCESS, metrics.UNCHANGED  # what Destination.place did


class Existing(NamedTuple):
    """What a listing of the destination says about one output path."""

    present: bool
    size: int = -1
    md5: str | None = None  # hex, as the store reports it


ABSENT = Existing(False)


class Destination:
    """A destination folder or object prefix, given as a path or fsspec URL.

    Examples
    --------
    >>> dest = Destination("/tmp/out")
    >>> dest.url_of("1.2/1.3/1.4.dcm")
    '/tmp/out/1.2/1.3/1.4.dcm'
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.fs, root = split_url(url)
        self.root = root.rstrip("/")
        self.local = is_local(self.fs)
        self.scheme = scheme_of(url)
        self._directories: set[str] = set()
        self._made: set[str] = set()  # of those, the ones it made (see _fresh)

    def __getstate__(self) -> dict:
        return {"url": self.url}

    def __setstate__(self, state: dict) -> None:
        Destination.__init__(self, state["url"])

    def path_of(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    def url_of(self, relative: str) -> str:
        return file_url(self.fs, self.path_of(relative), self.scheme)

    def size_of(self, relative: str) -> int | None:
        """Size of an existing output, or ``None`` if there is none."""
        path = self.path_of(relative)
        if self.local:
            try:
                return os.stat(path).st_size
            except FileNotFoundError:
                return None
        try:
            return int(self.fs.info(path)["size"])
        except FileNotFoundError:
            return None

    def listing(self, directory: str) -> Iterator[tuple[str, Existing]]:
        """The outputs present in ``directory`` (relative; ``""`` for the top), from one
        listing of it (paged by the store, one page in memory at a time), as
        ``(relative path, Existing)`` pairs.

        Raises
        ------
        OSError
            The store could not list it (a missing directory is simply empty).
        """
        prefix = (self.path_of(directory) if directory else self.root) + "/"
        base = self.root + "/"
        try:
            for path, size, md5 in iter_objects(self.fs, prefix):
                if "/" not in path[len(prefix):]:  # the directory's own files, not those of its subfolders
                    yield path[len(base):], Existing(True, size, md5)
        except FileNotFoundError:
            return

    def open_existing(self, relative: str) -> BinaryIO:
        return self.fs.open(self.path_of(relative), "rb")

    def same_as(self, relative: str, source_url: str, source_md5: str | None = None,
                data: bytes | None = None) -> bool:
        """True if the existing output holds exactly the bytes at ``source_url`` (``data``,
        when they are in memory already).

        Between object stores, sizes and the stores' MD5s decide without reading
        any data; otherwise the bytes are compared.
        """
        if data is None and (not self.local or local_path(source_url) is None):
            decided = same_by_checksum(source_url, self.fs.info(self.path_of(relative)), source_md5)
            if decided is not None:
                return decided
        with self.open_existing(relative) as existing, \
                (io.BytesIO(data) if data is not None else open_url(source_url)) as source:
            return same_content(existing, source)

    def place(self, relative: str, source_url: str, size: int, *, overwrite: bool = False,
              dry_run: bool = False, move: bool = False, source_md5: str | None = None,
              existing: Existing | None = None, data: bytes | None = None,
              provenance: Provenance | None = None, unnamed: int | None = None) -> tuple[str, int]:
        """Put the file at ``source_url`` at ``relative`` unless it is already there.

        ``existing`` is what a listing of the destination said about ``relative``
        (see :meth:`listing`); without it, the destination is asked. ``data``: the
        source's bytes, when they are already in memory (they are not read again).
        ``provenance``: who writes it, from what; recorded with a local output, and an
        output that ``provenance.run`` wrote itself is never replaced, even with ``overwrite``
        (two inputs of one run that claim one path: the first one written stays).

        Returns
        -------
        (``"success"`` or ``"unchanged"``, bytes written)

        Raises
        ------
        ExistsWithOtherContent
            The target holds other bytes and ``overwrite`` is false (never clobbered).

        ``move`` says the source is a temporary file that may be renamed into place
        (no copy of its bytes when it is on the destination's file system). ``unnamed``: the
        source is that unnamed file (:func:`~dicom_transfer.io.atomic.open_unnamed`) on the
        destination's file system, linked into place (``source_url`` reads it:
        ``/proc/self/fd/N``).
        OSError
            Reading, writing or the store failed.
        """
        if existing is None and not overwrite and not dry_run and (unnamed is not None or self._fresh(relative)):
            # Linking an unnamed file never replaces, nor does writing in a folder this destination
            # made itself: a target already there is decided as one that appears meanwhile (below),
            # without asking first.
            existing = ABSENT
        if existing is None:
            found = self.size_of(relative)
            existing = ABSENT if found is None else Existing(True, found)
        if existing.present:
            if existing.size == size and self._holds(relative, existing, source_url, source_md5, data):
                return UNCHANGED, 0
            written_from = self.provenance_of(relative)
            if not overwrite or (provenance and written_from and written_from.run == provenance.run):
                raise ExistsWithOtherContent(self.url_of(relative), written_from)
        if dry_run:
            return PLACED, 0
        try:
            return PLACED, self.write(relative, source_url, size, overwrite=existing.present, move=move,
                                      source_md5=source_md5, data=data, provenance=provenance, unnamed=unnamed)
        except (DestinationExists, FileExistsError):
            # Written by someone else since we looked: decide again, never clobber.
            if self.same_as(relative, source_url, source_md5, data):
                return UNCHANGED, 0
            raise ExistsWithOtherContent(self.url_of(relative), self.provenance_of(relative)) from None

    def provenance_of(self, relative: str) -> Provenance | None:
        """Which run wrote the output at ``relative``, from what (local outputs; else ``None``)."""
        return Provenance.decode(label_of(self.path_of(relative))) if self.local else None

    def _holds(self, relative: str, existing: Existing, source_url: str, source_md5: str | None,
               data: bytes | None = None) -> bool:
        """True if the output (of the source's size) holds the source's bytes: by the two
        MD5s when both are known, else as :meth:`same_as` decides."""
        if existing.md5 and source_md5:
            return existing.md5 == source_md5
        return self.same_as(relative, source_url, source_md5, data)

    def write(self, relative: str, source_url: str, expected_size: int, overwrite: bool,
              move: bool = False, source_md5: str | None = None, data: bytes | None = None,
              provenance: Provenance | None = None, unnamed: int | None = None) -> int:
        """Copy the file at ``source_url`` (or ``data``, its bytes) to ``relative``; return the
        bytes written. A local output is labelled with its ``provenance``. ``unnamed``: as
        :meth:`place` says.

        Raises
        ------
        DestinationExists, FileExistsError
            If the target appeared meanwhile and ``overwrite`` is false (where the
            store can tell: local disk, and server-side copies on GCS and S3).
        OSError
            If the copy did not deliver ``expected_size`` bytes (the source
            changed since it was validated) or the store failed.
        """
        path = self.path_of(relative)
        if self.local:
            label = provenance.encode() if provenance else None
            return self._write_local(path, source_url, expected_size, overwrite, move, data, label, unnamed)
        written = copy_into(self.fs, path, source_url, expected_size, source_md5, if_absent=not overwrite)
        if move:
            remove_local(source_url)
        return written

    def staging_directory(self) -> str:
        """Where to put temporary files that will be moved here: on the destination's
        file system when it is local (so placing them is a rename), else the system's."""
        if not self.local:
            return tempfile.gettempdir()
        directory = os.path.join(self.root, ".dicom-transfer", "staging")
        self._make_directory(directory)
        return directory

    def _make_directory(self, directory: str) -> None:
        if directory not in self._directories:  # one mkdir per folder, not per file
            try:
                os.mkdir(directory)
                self._made.add(directory)
            except FileExistsError:
                pass
            except FileNotFoundError:  # its parent first
                os.makedirs(os.path.dirname(directory), exist_ok=True)
                self._make_directory(directory)
                return
            self._directories.add(directory)

    def _fresh(self, relative: str) -> bool:
        """Whether the local output ``relative`` goes in a folder this destination made (here,
        now, making it if it is missing): nothing was there before this run."""
        if not self.local:
            return False
        directory = os.path.dirname(self.path_of(relative))
        self._make_directory(directory)
        return directory in self._made

    def _write_local(self, path: str, source_url: str, expected_size: int, overwrite: bool,
                     move: bool = False, data: bytes | None = None, label: bytes | None = None,
                     unnamed: int | None = None) -> int:
        directory = os.path.dirname(path)
        self._make_directory(directory)
        source_path = local_path(source_url)
        if unnamed is not None:
            check_size(os.fstat(unnamed).st_size, expected_size, path)
            set_label(unnamed, label)
            if link_unnamed(unnamed, path, overwrite):
                return expected_size
            move = False  # not allowed here: its bytes are copied (from source_url) instead
        if move and source_path is not None and os.stat(source_path).st_dev == os.stat(directory).st_dev:
            check_size(os.stat(source_path).st_size, expected_size, path)
            set_label(source_path, label)
            commit(source_path, path, overwrite)
            return expected_size
        if data is not None:
            fill = write_bytes(data)
        elif source_path is not None:
            fill = lambda fd: copy_contents(source_path, fd)  # noqa: E731
        else:
            fill = lambda fd: self._download(source_url, fd)  # noqa: E731
        return write_file(path, fill, expected_size, overwrite, label)

    @staticmethod
    def _download(source_url: str, fd: int) -> int:
        """Stream an object into ``fd`` and check it against the store's MD5."""
        digest = hashlib.md5(usedforsecurity=False)
        with open_url(source_url) as source, os.fdopen(fd, "wb", closefd=False) as out:
            written = stream(source, out, digest)
        expected = md5_hex(info_of(source_url))
        if expected and expected != digest.hexdigest():
            raise OSError(f"bytes read from {source_url} do not match its stored MD5")
        return written


def remove_url(url: str) -> None:
    """Remove the file or object at ``url``, if it is there."""
    path = local_path(url)
    if path is not None:
        remove_local(path)
        return
    fs, path = split_url(url)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path)


def remove_local(url: str) -> None:
    path = local_path(url)
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def same_content(first: BinaryIO, second: BinaryIO) -> bool:
    """True if two streams hold the same bytes (compared chunk by chunk)."""
    while True:
        a, b = first.read(CHUNK), second.read(CHUNK)
        if a != b:
            return False
        if not a:
            return True
