"""Azure Blob Storage through adlfs: the paged listing with Content-MD5s (server-side copies go
through adlfs's own copy-blob)."""

from __future__ import annotations

from collections.abc import Iterator

from fsspec.asyn import sync

from dicom_transfer.io.checksums import md5_hex


def azure_pages(fs, bucket: str, key: str) -> Iterator[list[tuple[str, int, str | None]]]:
    """``(path, size, MD5 or None)`` of the blobs below ``bucket/key`` (folder markers left out),
    one page at a time.

    Raises
    ------
    FileNotFoundError
        The container does not exist.
    """
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
