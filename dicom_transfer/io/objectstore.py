"""Object stores (GCS, Azure Blob, S3 through fsspec): verified copies, listings, bucket checks.

Each store's own calls are in its module (``store_gcs``, ``store_s3``, ``store_azure``), the
checksums in ``checksums``; this module chooses between them.

A copy within one store is server-side (GCS rewrite, Azure copy-blob, S3
CopyObject): the instance's bytes never pass through the worker. Across stores
the bytes are streamed in chunks with their MD5 computed on the way. Either way
the result is checked against the store's own MD5 (GCS ``md5Hash``, Azure
``Content-MD5``, S3 ``ETag`` when it is an MD5) where the store keeps one, and
always against the size; a mismatch removes the object and is an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable, Iterator

import fsspec

from dicom_transfer.errors import first_line, redact
from dicom_transfer.io.checksums import md5_hex, stream
from dicom_transfer.io.files import is_local, open_url, scheme_of, split_url
from dicom_transfer.io.preflight import (
    StoreUnavailable,
    check_endpoint_answers,
    credential_problem,
    within_deadline,
)
from dicom_transfer.io.store_azure import azure_pages
from dicom_transfer.io.store_gcs import gcs_pages, gcs_rewrite
from dicom_transfer.io.store_s3 import S3_SINGLE_COPY_LIMIT, s3_copy, s3_pages

GCS, S3, AZURE = ("gs", "gcs"), ("s3", "s3a"), ("az", "abfs", "abfss")  # fsspec protocol names


def copy_into(fs: fsspec.AbstractFileSystem, path: str, source_url: str, size: int,
              source_md5: str | None = None, if_absent: bool = False) -> int:
    """Copy the object or file at ``source_url`` to ``path`` on ``fs`` and verify it.

    Returns the number of bytes that passed through this process (0 for a
    server-side copy). ``if_absent`` asks the store to refuse a server-side copy
    if the target exists, where it can (GCS ``ifGenerationMatch=0``, S3
    ``If-None-Match: *``).

    Raises
    ------
    FileExistsError
        ``if_absent`` and the store refused because the target exists.
    OSError
        If the copy failed or does not match the source (size or MD5).
    """
    source_fs, source_path = split_url(source_url)
    if source_fs is fs:  # same store, same account and endpoint: fsspec caches one instance
        answer = server_side_copy(fs, source_path, path, if_absent=if_absent, size=size)
        expected = source_md5 or md5_hex(source_fs.info(source_path))
        _verify(fs, path, size, expected, "server-side copy", answer)
        return 0
    digest = hashlib.md5(usedforsecurity=False)
    sent = 0
    with open_url(source_url, size=size) as source, fs.open(path, "wb") as out:
        sent = stream(source, out, digest)
    if sent != size:
        _remove(fs, path)
        raise OSError(f"copied {sent} bytes but the source had {size} when validated: it changed")
    _verify(fs, path, size, digest.hexdigest(), "streamed copy")
    return sent


def server_side_copy(fs: fsspec.AbstractFileSystem, source_path: str, path: str,
                     if_absent: bool = False, size: int | None = None) -> dict | None:
    """Copy within one store without moving the bytes through this process.

    On GCS this is one rewrite call (repeated while the store says it is not
    done), on S3 one CopyObject (objects of ``size`` below 5 GiB), each
    conditional on the target being absent when ``if_absent``. Their answers
    describe the new object (GCS: all of it; S3: its ETag) and are returned, so
    that verifying the copy needs no further request. Otherwise the copy goes
    through fsspec (Azure copy-blob, S3 multipart copy) and ``None`` is returned.

    Raises
    ------
    FileExistsError
        ``if_absent`` and the target exists (the store answered 412).
    """
    protocol = protocol_of(fs)
    if protocol in S3 and size is not None and size < S3_SINGLE_COPY_LIMIT:
        return s3_copy(fs, source_path, path, if_absent)
    if protocol not in GCS:
        fs.copy(source_path, path)
        return None
    return gcs_rewrite(fs, source_path, path, if_absent)


def protocol_of(fs: fsspec.AbstractFileSystem) -> str:
    return fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol


def iter_objects(fs: fsspec.AbstractFileSystem, prefix: str) -> Iterator[tuple[str, int, str | None]]:
    """``(path, size, MD5 hex or None)`` of every object whose path starts with ``prefix``
    (``"bucket/folder/"``), in the store's order, holding one page of its listing at a time:
    a listing of millions of objects needs no more memory than one of thousands.

    Raises
    ------
    FileNotFoundError
        The bucket or container does not exist.
    """
    protocol = protocol_of(fs)
    bucket, _, key = prefix.partition("/")
    pages: Iterable[Iterable[tuple[str, int, str | None]]]
    if protocol in GCS:
        pages = gcs_pages(fs, bucket, key)
    elif protocol in S3:
        pages = s3_pages(fs, bucket, key)
    elif protocol in AZURE:
        pages = azure_pages(fs, bucket, key)
    elif is_local(fs):
        pages = iter([_local_files(prefix.rstrip("/") or "/")])
    else:  # other file systems: fsspec's own walk
        found = fs.find(prefix, detail=True, withdirs=False)
        pages = iter([[(path, int(found[path]["size"]), md5_hex(found[path])) for path in sorted(found)]])
    for page in pages:
        yield from page


def _local_files(directory: str) -> Iterator[tuple[str, int, None]]:
    """The files below a local ``directory`` (symbolic links followed), in the order of their
    paths, one directory in memory at a time; nothing if it does not exist."""
    for path, status in local_files(directory):
        yield path, status.st_size, None


def local_files(directory: str) -> Iterator[tuple[str, os.stat_result]]:
    """``(path, stat)`` of the files below a local ``directory`` (as :func:`_local_files`): one
    ``stat`` each, which gives the modification time with the size."""
    try:
        with os.scandir(directory) as listing:
            entries = sorted(listing, key=lambda e: e.name + "/" if e.is_dir() else e.name)
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if entry.is_dir():
            yield from local_files(entry.path)
        elif entry.is_file():
            try:
                status = entry.stat()
            except FileNotFoundError:  # removed since the folder was read (a temporary file): not an input
                continue
            yield entry.path, status


def _verify(fs: fsspec.AbstractFileSystem, path: str, size: int, expected_md5: str | None, how: str,
            info: dict | None = None) -> None:
    """Check the copy at ``path`` by size and MD5, from ``info`` (the store's answer to the
    copy) when it says enough, else from a fresh metadata request."""
    if info is not None and "size" not in info:
        if expected_md5 and md5_hex(info) == expected_md5:
            return  # the store's MD5 of the copy is the source's: the same bytes
        info = None
    if info is None:
        fs.invalidate_cache(path)
        info = fs.info(path)
    actual = md5_hex(info)
    problem = None
    if int(info.get("size", -1)) != size:
        problem = f"size {info.get('size')} instead of {size}"
    elif expected_md5 and actual and expected_md5 != actual:
        problem = f"MD5 {actual} instead of {expected_md5}"
    if problem:
        _remove(fs, path)
        raise OSError(f"{how} does not match its source ({problem}); the object was removed")


def _remove(fs: fsspec.AbstractFileSystem, path: str) -> None:
    with contextlib.suppress(Exception):
        fs.rm(path)


def check_bucket(url: str, role: str) -> None:
    """Fail fast, with a clear message, if the bucket or container of ``url`` cannot be used.

    Local paths are not checked here (a missing folder simply matches nothing).

    Raises
    ------
    StoreUnavailable
        Saying which bucket, for which role, and why.
    """
    scheme = scheme_of(url)
    if scheme is None:
        return
    bucket = url.split("://", 1)[1].strip("/").split("/")[0]
    where = f"{role} bucket {scheme}{bucket}"
    try:
        check_endpoint_answers(url, where)
        within_deadline(lambda: _info(url), where)
    except StoreUnavailable:
        raise
    except FileNotFoundError:
        raise StoreUnavailable(f"{where} does not exist") from None
    except PermissionError:
        raise StoreUnavailable(f"{where}: permission denied") from None
    except Exception as exc:  # noqa: BLE001 - each SDK raises its own types for a dead endpoint
        message = first_line(exc)
        advice = credential_problem(exc)
        if advice:
            raise StoreUnavailable(f"{where}: {advice}") from None
        if getattr(exc, "status_code", None) in (401, 403):
            raise StoreUnavailable(f"{where}: access denied ({redact(message)[:200]})") from None
        raise StoreUnavailable(f"{where} cannot be reached: {type(exc).__name__}: "
                               f"{redact(message)}") from None


def _info(url: str) -> None:
    fs, path = split_url(url)  # builds the client: where missing or malformed credentials show
    fs.info(path.strip("/").split("/")[0])
