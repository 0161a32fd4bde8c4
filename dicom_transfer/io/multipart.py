"""Stream the parts of a ``multipart/related`` answer (WADO-RS) into files.

Parts are written to disk as they arrive, so a series of any size passes
through bounded memory: one chunk plus the length of the boundary.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO


class MultipartError(ValueError):
    """The body is not a well-formed multipart message."""


def boundary_of(content_type: str) -> str:
    """The ``boundary`` parameter of a Content-Type header.

    Raises
    ------
    MultipartError
        If the type is not multipart or has no boundary.
    """
    if not content_type.lower().startswith("multipart/"):
        raise MultipartError(f"expected a multipart answer, got Content-Type {content_type[:80]!r}")
    match = re.search(r'boundary="?([^";]+)"?', content_type, re.IGNORECASE)
    if not match:
        raise MultipartError("multipart answer without a boundary parameter")
    return match.group(1).strip()


def _headers(block: bytes) -> dict[str, str]:
    headers = {}
    for line in block.decode("latin-1").split("\r\n"):
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return headers


def iter_parts_to_files(chunks: Iterable[bytes], boundary: str,
                        new_file: Callable[[], tuple[str, BinaryIO]]) -> Iterator[tuple[dict, str, int]]:
    """Yield ``(headers, path, size)`` for each part, once its bytes are all in ``path``.

    ``new_file()`` returns a path and an open binary file to write a part to; the
    caller owns (and removes) the files. Memory is bounded by the chunk size, whatever
    the size of a part.

    Raises
    ------
    MultipartError
        If the body ends before the closing boundary.
    """
    parts = _PartsReader(boundary, new_file)
    source = iter(chunks)
    yield from parts.feed(b"")
    while not parts.ended:
        chunk = next(source, None)
        if chunk is None:
            parts.abandon()
            raise MultipartError("multipart answer ended before its closing boundary (truncated)")
        yield from parts.feed(chunk)


_Part = tuple[dict, str, int]


class _PartsReader:
    """The byte-level state of :func:`iter_parts_to_files`: ``step`` is the parser of the state the
    bytes read so far end in (preamble, after a delimiter, a part's headers, a part's body); each
    step says whether it moved on and, at the end of a part, returns it."""

    def __init__(self, boundary: str, new_file: Callable[[], tuple[str, BinaryIO]]) -> None:
        self.delimiter = b"\r\n--" + boundary.encode("latin-1")
        self.keep = len(self.delimiter) + 4  # what may hold the start of a delimiter split across chunks
        self.buffer = b"\r\n"  # the first boundary has no CRLF before it
        self.new_file = new_file
        self.step: Callable[[], tuple[bool, _Part | None]] = self._preamble
        self.out: BinaryIO | None = None
        self.path, self.size = "", 0
        self.headers: dict[str, str] = {}
        self.ended = False  # the closing boundary was read

    def feed(self, chunk: bytes) -> Iterator[_Part]:
        self.buffer += chunk
        while not self.ended:
            moved, part = self.step()
            if part is not None:
                yield part
            if not moved:
                return

    def abandon(self) -> None:
        if self.out is not None:
            self.out.close()

    def _preamble(self) -> tuple[bool, _Part | None]:
        index = self.buffer.find(self.delimiter)
        if index < 0:
            self.buffer = self.buffer[-self.keep:]
            return False, None
        self.buffer = self.buffer[index + len(self.delimiter):]
        self.step = self._after_delimiter
        return True, None

    def _after_delimiter(self) -> tuple[bool, _Part | None]:
        if len(self.buffer) < 2:
            return False, None
        if self.buffer.startswith(b"--"):
            self.ended = True
            return False, None
        self.step = self._headers
        return True, None

    def _headers(self) -> tuple[bool, _Part | None]:
        index = self.buffer.find(b"\r\n\r\n")
        if index < 0:
            if len(self.buffer) > 64 * 1024:
                raise MultipartError("part headers longer than 64 KiB")
            return False, None
        self.headers = _headers(self.buffer[:index])
        self.buffer = self.buffer[index + 4:]
        self.path, self.out = self.new_file()
        self.size = 0
        self.step = self._body
        return True, None

    def _body(self) -> tuple[bool, _Part | None]:
        assert self.out is not None  # opened when the part's headers ended
        index = self.buffer.find(self.delimiter)
        if index < 0:
            if len(self.buffer) > self.keep:
                self.out.write(self.buffer[:-self.keep])
                self.size += len(self.buffer) - self.keep
                self.buffer = self.buffer[-self.keep:]
            return False, None
        self.out.write(self.buffer[:index])
        self.size += index
        self.out.close()
        self.out = None
        self.buffer = self.buffer[index + len(self.delimiter):]
        self.step = self._after_delimiter
        return True, (self.headers, self.path, self.size)


def remove_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
