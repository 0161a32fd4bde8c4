"""Create local files atomically: complete under their final name, or not at all.

Where Linux allows it, the bytes go to an unnamed file (``O_TMPFILE``) that is
linked into place once complete (``linkat``): one directory operation per file,
as cheap as a plain create, and a crash leaves nothing behind. Elsewhere, a
hidden ``.NAME.XXXX.partial`` file is renamed into place without replacing
(``renameat2(RENAME_NOREPLACE)``, or a hard link).

A file may carry a label (an extended attribute, set before it gets its name):
who wrote it, from what. Where the file system keeps no extended attributes,
files simply have none.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import sys
import uuid
from collections.abc import Callable

from dicom_transfer.io.files import CHUNK

AT_FDCWD, AT_SYMLINK_FOLLOW, AT_EMPTY_PATH, RENAME_NOREPLACE = -100, 0x400, 0x1000, 1


def _libc_function(name: str, argtypes: list) -> Callable | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    function.argtypes = argtypes
    return function


_RENAMEAT2 = _libc_function("renameat2", [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                                          ctypes.c_uint])
_LINKAT = _libc_function("linkat", [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int])


class _Support:
    """Whether unnamed temporary files work here (learned once per process)."""

    unnamed = hasattr(os, "O_TMPFILE") and _LINKAT is not None


LABEL_ATTRIBUTE = "user.dicom_transfer.written_from"
_LABEL_UNSUPPORTED = (errno.ENOTSUP, errno.E2BIG, errno.ENOSPC, errno.ERANGE, errno.EPERM, errno.EACCES)


def set_label(target: int | str, label: bytes | None) -> None:
    """Attach ``label`` to the file at ``target`` (a descriptor or a path), where the file
    system allows it; nothing otherwise."""
    if label is None or not hasattr(os, "setxattr"):
        return
    try:
        os.setxattr(target, LABEL_ATTRIBUTE, label)
    except OSError as exc:
        if exc.errno not in _LABEL_UNSUPPORTED:
            raise


def label_of(path: str) -> bytes | None:
    """The label of the file at ``path`` (see :func:`set_label`), or ``None``."""
    if not hasattr(os, "getxattr"):
        return None
    try:
        return os.getxattr(path, LABEL_ATTRIBUTE)
    except OSError:  # none set, none kept here, or the file is gone
        return None


def write_bytes(data: bytes) -> Callable[[int], int]:
    """A ``fill`` for :func:`write_file` that writes ``data`` (already in memory)."""
    def fill(fd: int) -> int:
        view, written = memoryview(data), 0
        while written < len(view):
            written += os.write(fd, view[written:])
        return written
    return fill


class DestinationExists(Exception):
    """The target exists (and overwriting was not asked for)."""


def copy_contents(source_path: str, fd: int) -> int:
    """Copy a local file's bytes into ``fd`` (``sendfile(2)``: not through Python); return the count."""
    with open(source_path, "rb") as source:
        size = os.fstat(source.fileno()).st_size
        offset = 0
        while True:
            sent = os.sendfile(fd, source.fileno(), offset, max(size - offset, CHUNK))
            if sent == 0:
                return offset
            offset += sent


def write_file(path: str, fill: Callable[[int], int], expected_size: int, overwrite: bool = False,
               label: bytes | None = None) -> int:
    """Create ``path`` with what ``fill(fd)`` writes, labelled ``label`` (see :func:`set_label`);
    return the byte count.

    Raises
    ------
    DestinationExists
        If ``path`` exists and ``overwrite`` is false (it is never replaced then).
    OSError
        If writing failed or ``fill`` wrote other than ``expected_size`` bytes.
    """
    directory = os.path.dirname(path)
    if not overwrite and _Support.unnamed:
        written = _write_unnamed(directory, path, fill, expected_size, label)
        if written is not None:
            return written
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.partial")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    placed = False
    try:
        try:
            written = fill(fd)
            set_label(fd, label)
        finally:
            os.close(fd)
        check_size(written, expected_size, path)
        commit(temporary, path, overwrite)
        placed = True
    finally:
        if not placed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
    return written


def _write_unnamed(directory: str, path: str, fill: Callable[[int], int], expected_size: int,
                   label: bytes | None) -> int | None:
    """``O_TMPFILE`` + ``linkat``; ``None`` where the file system or kernel does not allow it."""
    try:
        fd = os.open(directory, os.O_TMPFILE | os.O_WRONLY, 0o644)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
            _Support.unnamed = False
            return None
        raise
    try:
        written = fill(fd)
        check_size(written, expected_size, path)
        set_label(fd, label)
        if _link(fd, path):
            return written
        _Support.unnamed = False
        return None
    finally:
        os.close(fd)


def _link(fd: int, path: str) -> bool:
    """Give the unnamed file at ``fd`` its name; False if linking unnamed files is not allowed."""
    if _LINKAT is None:
        return False
    target = os.fsencode(path)
    attempts = ((fd, b"", AT_EMPTY_PATH),  # needs CAP_DAC_READ_SEARCH
                (AT_FDCWD, f"/proc/self/fd/{fd}".encode(), AT_SYMLINK_FOLLOW))
    for directory_fd, name, flags in attempts:
        if _LINKAT(directory_fd, name, AT_FDCWD, target, flags) == 0:
            return True
        error = ctypes.get_errno()
        if error == errno.EEXIST:
            raise DestinationExists(path)
        if error not in (errno.ENOENT, errno.EPERM, errno.EXDEV, errno.EINVAL, errno.EACCES):
            raise OSError(error, os.strerror(error), path)
    return False


def open_unnamed(directory: str) -> int | None:
    """An unnamed file (``O_TMPFILE``) on the file system of ``directory``, open for reading and
    writing, to be named by :func:`link_unnamed` once complete (closed unnamed, it leaves
    nothing behind); ``None`` where the file system or kernel does not allow it."""
    if not _Support.unnamed:
        return None
    try:
        return os.open(directory, os.O_TMPFILE | os.O_RDWR, 0o644)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
            _Support.unnamed = False
            return None
        raise


def link_unnamed(fd: int, path: str, overwrite: bool) -> bool:
    """Give the complete unnamed file at ``fd`` (:func:`open_unnamed`) the name ``path``:
    replacing, or never clobbering. False where linking unnamed files is not allowed (nothing
    done; later :func:`open_unnamed` calls then answer ``None``).

    Raises
    ------
    DestinationExists
        If ``path`` exists and ``overwrite`` is false.
    """
    target = path if not overwrite else os.path.join(
        os.path.dirname(path), f".{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.partial")
    if not _link(fd, target):
        _Support.unnamed = False
        return False
    if overwrite:
        try:
            os.replace(target, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target)
            raise
    return True


def commit(complete: str, path: str, overwrite: bool) -> None:
    """Give a complete file its final name: replacing, or never clobbering."""
    if overwrite:
        os.replace(complete, path)
        return
    try:
        rename_no_replace(complete, path)
    except FileExistsError as exc:
        raise DestinationExists(path) from exc


def rename_no_replace(source: str, target: str) -> None:
    """Atomically give ``source`` the name ``target``, failing if ``target`` exists.

    Raises
    ------
    FileExistsError
        If ``target`` exists.
    """
    if _RENAMEAT2 is not None:
        if _RENAMEAT2(AT_FDCWD, os.fsencode(source), AT_FDCWD, os.fsencode(target), RENAME_NOREPLACE) == 0:
            return
        error = ctypes.get_errno()
        if error == errno.EEXIST:
            raise FileExistsError(error, os.strerror(error), target)
        if error not in (errno.EINVAL, errno.ENOSYS, errno.EPERM):
            raise OSError(error, os.strerror(error), target)
    os.link(source, target)
    os.unlink(source)


def check_size(written: int, expected: int, path: str) -> None:
    if written != expected:
        raise OSError(
            f"copied {written} bytes to {path} but the source had {expected} bytes when it was "
            "validated; it changed during the copy"
        )
