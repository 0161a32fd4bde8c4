"""Checksums: the MD5 each object store keeps (and how it spells it), SHA-256 of what a worker
reads, and copies that compute a digest on the way.

Stores: GCS ``md5Hash`` (base64), Azure ``Content-MD5`` (raw bytes), S3 ``ETag`` when it is an
MD5 (a single-part upload). None of them is trusted unless it is there: ``None`` means the store
keeps none, and nothing is compared.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
from typing import BinaryIO

from dicom_transfer.io.files import CHUNK, open_url, split_url


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


def stream(source: BinaryIO, out: BinaryIO, digest=None) -> int:
    """Copy in chunks (bounded memory), updating ``digest``; return the byte count."""
    sent = 0
    while chunk := source.read(CHUNK):
        out.write(chunk)
        if digest is not None:
            digest.update(chunk)
        sent += len(chunk)
    return sent


def sha256_of_url(url: str) -> str:
    """The SHA-256 (hex) of the file or object at ``url``, read in chunks."""
    digest = hashlib.sha256()
    with open_url(url) as source:
        stream_digest(source, digest)
    return digest.hexdigest()


def stream_digest(source: BinaryIO, digest) -> int:
    """Read ``source`` to its end into ``digest``; return the byte count."""
    read = 0
    while chunk := source.read(CHUNK):
        digest.update(chunk)
        read += len(chunk)
    return read


def info_of(url: str) -> dict:
    """The store's (or file system's) metadata of ``url``."""
    fs, path = split_url(url)
    return fs.info(path)


def same_by_checksum(first_url: str, second_info: dict, first_md5: str | None = None) -> bool | None:
    """Compare by store MD5 without reading data (sizes are already known equal);
    ``None`` if undecidable."""
    if first_md5 is None:
        first_md5 = md5_hex(info_of(first_url))
    a, b = first_md5, md5_hex(second_info)
    if a and b:
        return a == b
    return None
