"""Google Cloud Storage through gcsfs: the paged listing with MD5s, and the rewrite call of a
server-side copy (the bytes never pass through the worker)."""

from __future__ import annotations

from collections.abc import Iterator

import fsspec

from dicom_transfer.io.checksums import md5_hex


def gcs_pages(fs, bucket: str, key: str) -> Iterator[list[tuple[str, int, str | None]]]:
    """``(path, size, MD5)`` of the objects below ``bucket/key``, one page (1,000) at a time."""
    token = None
    while True:
        page = fs.call("GET", "b/{}/o", bucket, json_out=True, prefix=key, pageToken=token, maxResults=1000,
                       fields="items(name,size,md5Hash),nextPageToken")
        yield [(f"{bucket}/{item['name']}", int(item["size"]), md5_hex(item))
               for item in page.get("items", []) if not item["name"].endswith("/")]
        token = page.get("nextPageToken")
        if not token:
            return


def gcs_rewrite(fs: fsspec.AbstractFileSystem, source_path: str, path: str, if_absent: bool) -> dict | None:
    """One rewrite call (repeated while GCS says it is not done), conditional on the target
    being absent when ``if_absent`` (``ifGenerationMatch=0``); the new object's resource."""
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
