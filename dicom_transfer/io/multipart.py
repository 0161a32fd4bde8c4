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


def iter_parts_to_files(chunks: Iterable[bytes], boundary: str,  # noqa: C901 - one byte-level state machine
                        new_file: Callable[[], tuple[str, BinaryIO]]) -> Iterator[tuple[dict, str, int]]:
    """Yield ``(headers, path, size)`` for each part, once its bytes are all in ``path``.

    ``new_file()`` returns a path and an open binary file to write a part to; the
    caller owns (and removes) the files.

    Raises
    ------
    MultipartError
        If the body ends before the closing boundary.
    """
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    buffer = b"\r\n"  # the first boundary has no CRLF before it
    state = "preamble"
    out: BinaryIO | None = None
    path, size, headers = "", 0, {}
    keep = len(delimiter) + 4
    source = iter(chunks)
    finished = False
    while True:
        if state == "preamble":
            index = buffer.find(delimiter)
            if index >= 0:
                buffer = buffer[index + len(delimiter):]
                state = "after-delimiter"
                continue
            buffer = buffer[-keep:]
        elif state == "after-delimiter":
            if len(buffer) >= 2:
                if buffer.startswith(b"--"):
                    return
                state = "headers"
                continue
        elif state == "headers":
            index = buffer.find(b"\r\n\r\n")
            if index >= 0:
                headers = _headers(buffer[:index])
                buffer = buffer[index + 4:]
                path, out = new_file()
                size = 0
                state = "body"
                continue
            if len(buffer) > 64 * 1024:
                raise MultipartError("part headers longer than 64 KiB")
        elif state == "body":
            assert out is not None  # opened when the part's headers ended
            index = buffer.find(delimiter)
            if index >= 0:
                out.write(buffer[:index])
                size += index
                out.close()
                out = None
                buffer = buffer[index + len(delimiter):]
                state = "after-delimiter"
                yield headers, path, size
                continue
            if len(buffer) > keep:
                out.write(buffer[:-keep])
                size += len(buffer) - keep
                buffer = buffer[-keep:]
        if finished:
            if out is not None:
                out.close()
            raise MultipartError("multipart answer ended before its closing boundary (truncated)")
        chunk = next(source, None)
        if chunk is None:
            finished = True
        else:
            buffer += chunk


def remove_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
