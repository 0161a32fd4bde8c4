"""Write instances under a destination atomically and idempotently.

Local disk: bytes go to a hidden temporary file beside the target, which is
then hard-linked (no overwrite) or renamed (overwrite) into place, so an
interrupted run never leaves a partial file under a final name. Object stores:
a put only becomes visible once complete, so it is written directly.
"""

from __future__ import annotations

import os
import shutil
import uuid
from typing import BinaryIO

from dicom_transfer.io.files import file_url, is_local, open_url, split_url

CHUNK = 1024 * 1024


class DestinationExists(Exception):
    """The target exists (and overwriting was not asked for)."""


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

    def __getstate__(self) -> dict:
        return {"url": self.url}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["url"])

    def path_of(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    def url_of(self, relative: str) -> str:
        return file_url(self.fs, self.path_of(relative))

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

    def open_existing(self, relative: str) -> BinaryIO:
        return self.fs.open(self.path_of(relative), "rb")

    def write(self, relative: str, source_url: str, expected_size: int, overwrite: bool) -> int:
        """Copy the file at ``source_url`` to ``relative``; return the bytes written.

        Raises
        ------
        DestinationExists
            If the target appeared meanwhile and ``overwrite`` is false.
        OSError
            If the copy did not deliver ``expected_size`` bytes (the source
            changed since it was validated) or the store failed.
        """
        path = self.path_of(relative)
        if self.local:
            return self._write_local(path, source_url, expected_size, overwrite)
        with open_url(source_url) as source, self.fs.open(path, "wb") as out:
            written = _copy(source, out)
        _check_size(written, expected_size, path)
        return written

    def _write_local(self, path: str, source_url: str, expected_size: int, overwrite: bool) -> int:
        directory, name = os.path.split(path)
        os.makedirs(directory, exist_ok=True)
        temporary = os.path.join(directory, f".{name}.{uuid.uuid4().hex[:12]}.partial")
        try:
            source_fs, source_path = split_url(source_url)
            if is_local(source_fs):
                shutil.copyfile(source_path, temporary)  # sendfile(2): no copy through Python
                written = os.stat(temporary).st_size
            else:
                with open_url(source_url) as source, open(temporary, "wb") as out:
                    written = _copy(source, out)
            _check_size(written, expected_size, path)
            if overwrite:
                os.replace(temporary, path)
            else:
                try:
                    os.link(temporary, path)  # atomic and never clobbers
                except FileExistsError as exc:
                    raise DestinationExists(path) from exc
        finally:
            if os.path.lexists(temporary):
                os.unlink(temporary)
        return written


def _copy(source: BinaryIO, out: BinaryIO) -> int:
    written = 0
    while chunk := source.read(CHUNK):
        out.write(chunk)
        written += len(chunk)
    return written


def _check_size(written: int, expected: int, path: str) -> None:
    if written != expected:
        raise OSError(
            f"copied {written} bytes to {path} but the source had {expected} bytes when it was "
            "validated; it changed during the copy"
        )


def same_content(first: BinaryIO, second: BinaryIO) -> bool:
    """True if two streams hold the same bytes (compared chunk by chunk)."""
    while True:
        a, b = first.read(CHUNK), second.read(CHUNK)
        if a != b:
            return False
        if not a:
            return True
