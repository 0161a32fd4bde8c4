"""Object stores (GCS, Azure Blob, S3 through fsspec): checksums, verified copies.

A copy within one store is server-side (GCS rewrite, Azure copy-blob, S3
CopyObject): the instance's bytes never pass through the worker. Across stores
the bytes are streamed in chunks with their MD5 computed on the way. Either way
the result is checked against the store's own MD5 (GCS ``md5Hash``, Azure
``Content-MD5``, S3 ``ETag`` when it is an MD5) where the store keeps one, and
always against the size; a mismatch removes the object and is an error.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import fsspec
from fsspec.asyn import sync

from dicom_transfer.errors import first_line, redact
from dicom_transfer.io.files import CHUNK, is_local, open_url, scheme_of, split_url
from dicom_transfer.io.preflight import (
    StoreUnavailable,
    check_endpoint_answers,
    credential_problem,
    within_deadline,
)

S3_SINGLE_COPY_LIMIT = 5 << 30  # larger objects need a multipart copy (fsspec's)
GCS, S3, AZURE = ("gs", "gcs"), ("s3", "s3a"), ("az", "abfs", "abfss")  # fsspec protocol names


def md5_hex(info: dict) -> str | None:
    """The object's MD5 as the store reports it (hex), or ``None`` if it keeps none."""
    if info.get("md5Hash"):  # GCS, base64
        with contextlib.suppress(binascii.Error, ValueError):
            return base64.b64decode(info["md5Hash"]).hex()
    settings = info.get("content_settings")  # Azure: a ContentSettings object (a dict when given by hand)
    content_md5 = settings.get("content_md5") if isinstance(settings, dict) else getattr(settings, "content_md5", None)
    if content_md5:  # Azure, raw bytes
        return bytes(content_md5).hex()
    etag = str(info.get("ETag") or "").strip('"')
    if len(etag) == 32 and "-" not in etag:  # S3 single-part upload: the ETag is the MD5
        with contextlib.suppress(ValueError):
            int(etag, 16)
            return etag.lower()
    return None


def info_of(url: str) -> dict:
    fs, path = split_url(url)
    return fs.info(path)


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


def stream(source: BinaryIO, out: BinaryIO, digest=None) -> int:
    """Copy in chunks (bounded memory), updating ``digest``; return the byte count."""
    sent = 0
    while chunk := source.read(CHUNK):
        out.write(chunk)
        if digest is not None:
            digest.update(chunk)
        sent += len(chunk)
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
        return _s3_copy(fs, source_path, path, if_absent)
    if protocol not in GCS:
        fs.copy(source_path, path)
        return None
    source_bucket, source_key, generation = fs.split_path(source_path)
    bucket, key, _ = fs.split_path(path)
    token = None
    while True:
        answer = fs.call("POST", "b/{}/o/{}/rewriteTo/b/{}/o/{}", source_bucket, source_key, bucket, key,
                         headers={"Content-Type": "application/json"}, json_out=True,
                         sourceGeneration=generation, rewriteToken=token,
                         ifGenerationMatch=0 if if_absent else None)
        if answer.get("done") is True:
            fs.invalidate_cache(path)
            return answer.get("resource")
        token = answer["rewriteToken"]


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
        pages = _gcs_pages(fs, bucket, key)
    elif protocol in S3:
        pages = _s3_pages(fs, bucket, key)
    elif protocol in AZURE:
        pages = _azure_pages(fs, bucket, key)
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
    try:
        with os.scandir(directory) as listing:
            entries = sorted(listing, key=lambda e: e.name + "/" if e.is_dir() else e.name)
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if entry.is_dir():
            yield from _local_files(entry.path)
        elif entry.is_file():
            yield entry.path, entry.stat().st_size, None


def _gcs_pages(fs, bucket: str, key: str) -> Iterator[list[tuple[str, int, str | None]]]:
    token = None
    while True:
        page = fs.call("GET", "b/{}/o", bucket, json_out=True, prefix=key, pageToken=token, maxResults=1000,
                       fields="items(name,size,md5Hash),nextPageToken")
        yield [(f"{bucket}/{item['name']}", int(item["size"]), md5_hex(item))
               for item in page.get("items", []) if not item["name"].endswith("/")]
        token = page.get("nextPageToken")
        if not token:
            return


def _s3_pages(fs, bucket: str, key: str) -> Iterator[list[tuple[str, int, str | None]]]:
    token: dict = {}
    while True:
        page = fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=key, **token)
        yield [(f"{bucket}/{item['Key']}", int(item["Size"]), md5_hex(item))
               for item in page.get("Contents", []) if not item["Key"].endswith("/")]
        if not page.get("IsTruncated"):
            return
        token = {"ContinuationToken": page["NextContinuationToken"]}


def _azure_pages(fs, bucket: str, key: str) -> Iterator[list[tuple[str, int, str | None]]]:
    from azure.core.exceptions import ResourceNotFoundError

    async def one_page(token: str | None) -> tuple[list, str | None]:
        client = fs.service_client.get_container_client(bucket)
        pages = client.list_blobs(name_starts_with=key, include=["metadata"]).by_page(continuation_token=token)
        try:
            page = await pages.__anext__()
        except StopAsyncIteration:
            return [], None
        except ResourceNotFoundError:
            raise FileNotFoundError(f"container {bucket} does not exist") from None
        found = [(f"{bucket}/{blob.name}", int(blob.size), md5_hex({"content_settings": blob.content_settings}))
                 async for blob in page
                 if not (blob.metadata or {}).get("hdi_isfolder") and not blob.name.endswith("/")]
        return found, pages.continuation_token

    token = None
    while True:
        found, token = sync(fs.loop, one_page, token)
        yield found
        if not token:
            return


def _s3_copy(fs: fsspec.AbstractFileSystem, source_path: str, path: str, if_absent: bool) -> dict:
    source_bucket, source_key, version = fs.split_path(source_path)
    bucket, key, _ = fs.split_path(path)
    source = {"Bucket": source_bucket, "Key": source_key, **({"VersionId": version} if version else {})}
    condition = {"IfNoneMatch": "*"} if if_absent else {}
    answer = fs.call_s3("copy_object", Bucket=bucket, Key=key, CopySource=source, **condition)
    fs.invalidate_cache(path)
    return {"ETag": answer.get("CopyObjectResult", {}).get("ETag")}


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


def same_by_checksum(first_url: str, second_info: dict, first_md5: str | None = None) -> bool | None:
    """Compare by store MD5 without reading data (sizes are already known equal);
    ``None`` if undecidable."""
    if first_md5 is None:
        first_md5 = md5_hex(info_of(first_url))
    a, b = first_md5, md5_hex(second_info)
    if a and b:
        return a == b
    return None


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
