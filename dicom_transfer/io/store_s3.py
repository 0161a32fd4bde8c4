"""Amazon S3 (and S3-compatible stores) through s3fs: the paged listing with MD5s (ETags of
single-part uploads), and CopyObject for a server-side copy."""

from __future__ import annotations

from collections.abc import Iterator

import fsspec

from dicom_transfer.io.checksums import md5_hex

S3_SINGLE_COPY_LIMIT = 5 << 30  # larger objects need a multipart copy (fsspec's)


def s3_pages(fs, bucket: str, key: str) -> Iterator[list[tuple[str, int, str | None]]]:
    """``(path, size, MD5 or None)`` of the objects below ``bucket/key``, one page at a time."""
    token: dict = {}
    while True:
        page = fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=key, **token)
        yield [(f"{bucket}/{item['Key']}", int(item["Size"]), md5_hex(item))
               for item in page.get("Contents", []) if not item["Key"].endswith("/")]
        if not page.get("IsTruncated"):
            return
        token = {"ContinuationToken": page["NextContinuationToken"]}


def s3_copy(fs: fsspec.AbstractFileSystem, source_path: str, path: str, if_absent: bool) -> dict:
    """One CopyObject (objects below 5 GiB), with ``If-None-Match: *`` when ``if_absent``; the
    new object's ETag."""
    source_bucket, source_key, version = fs.split_path(source_path)
    bucket, key, _ = fs.split_path(path)
    source = {"Bucket": source_bucket, "Key": source_key, **({"VersionId": version} if version else {})}
    condition = {"IfNoneMatch": "*"} if if_absent else {}
    answer = fs.call_s3("copy_object", Bucket=bucket, Key=key, CopySource=source, **condition)
    fs.invalidate_cache(path)
    return {"ETag": answer.get("CopyObjectResult", {}).get("ETag")}
