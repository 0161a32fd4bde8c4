"""A DICOMweb client for bulk transfers: STOW-RS, QIDO-RS and WADO-RS over ``requests``.

TLS verification is always on (``ca_bundle`` adds a private CA). GET requests are
retried by urllib3 (429 with ``Retry-After``, 5xx, connection errors) and here when
their body is cut off; STOW-RS bodies are streamed, so their retries are driven here.
What is retried, how often and how patiently is decided in :mod:`dicom_transfer.io.retry`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import BinaryIO

import requests
from requests.adapters import HTTPAdapter

from dicom_transfer.dicom_json import SERIES_INSTANCES, SERIES_UID, SOP_UID, first_value, values
from dicom_transfer.errors import redact, redact_url
from dicom_transfer.io.auth import AuthConfig, AuthError
from dicom_transfer.io.files import CHUNK, open_url
from dicom_transfer.io.multipart import MultipartError, boundary_of, iter_parts_to_files, remove_quietly
from dicom_transfer.io.retry import BODY_ERRORS, RETRYABLE_STATUS, RetryableAnswer, RetryPolicy, parse_retry_after

LOG = logging.getLogger(__name__)
DICOM_JSON = "application/dicom+json"
PAGE_SIZE = 1000  # QIDO-RS results per request: a study of 100,000 instances is never one answer


class DicomwebError(Exception):
    """A request failed for good (after retries, or with a non-retryable status).

    Attributes
    ----------
    status:
        HTTP status, or ``None`` for a connection-level failure.
    """

    def __init__(self, message: str, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class TranscodingError(DicomwebError):
    """The server cannot provide the requested transfer syntax (not transient: never retried)."""


class MultipartBody:
    """A ``multipart/related; type="application/dicom"`` body streamed from files.

    ``requests`` sends it with a ``Content-Length`` (from ``__len__``) and reads it
    in chunks, so an instance is never held in memory whole.
    """

    def __init__(self, parts: Sequence[tuple[str, int]], boundary: str | None = None) -> None:
        self.boundary = boundary or uuid.uuid4().hex
        self.parts = list(parts)
        self._part_header = (f"--{self.boundary}\r\nContent-Type: application/dicom\r\n"
                             f"Content-Length: {{}}\r\n\r\n")
        self._closing = f"--{self.boundary}--\r\n".encode()
        self._length = sum(len(self._part_header.format(size).encode()) + size + 2
                           for _, size in self.parts) + len(self._closing)
        self._pieces = self._generate()
        self._buffer = b""
        self._offset = 0

    @property
    def content_type(self) -> str:
        return f'multipart/related; type="application/dicom"; boundary={self.boundary}'

    def __len__(self) -> int:
        return self._length

    def _generate(self) -> Iterator[bytes]:
        for url, size in self.parts:
            yield self._part_header.format(size).encode()
            sent = 0
            with open_url(url) as source:
                while chunk := source.read(CHUNK):
                    sent += len(chunk)
                    yield chunk
            if sent != size:
                raise OSError(f"{url} has {sent} bytes, not the {size} validated: it changed")
            yield b"\r\n"
        yield self._closing

    def read(self, size: int = -1) -> bytes:
        # The pieces of one read are joined once: appending each to a growing buffer copied a 1 MiB
        # block a dozen times over when instances are small (0.2 ms of CPU per 64 KB instance,
        # under the GIL, for a plain read's 0.02 ms). What is left of the last piece is kept with an
        # offset, never sliced off the front (a client reading in small blocks would copy it each time).
        have = len(self._buffer) - self._offset
        if 0 <= size <= have:
            self._offset += size
            return self._buffer[self._offset - size:self._offset]
        pieces: list[bytes] = []
        if have:
            pieces.append(self._buffer[self._offset:] if self._offset else self._buffer)
        self._buffer, self._offset = b"", 0
        while size < 0 or have < size:
            piece = next(self._pieces, None)
            if piece is None:
                break
            pieces.append(piece)
            have += len(piece)
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        if 0 <= size < len(data):
            self._buffer, self._offset = data, size
            return data[:size]
        return data


class _BlockAdapter(HTTPAdapter):
    """Sends a streamed body in ``CHUNK`` blocks instead of urllib3's 16 KiB: a STOW-RS request of
    32 MB is 32 reads and sends instead of 2,000 (the Python per block, under the GIL, had made
    concurrent requests wait for one another)."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        kwargs.setdefault("blocksize", CHUNK)
        super().init_poolmanager(*args, **kwargs)


class DicomwebClient:
    """Talks to one DICOMweb service root, e.g. ``https://host/dicom-web``.

    Example::

        client = DicomwebClient("http://127.0.0.1:8042/dicom-web")
        client.store([("a.dcm", 1234)])
    """

    def __init__(self, url: str, auth: AuthConfig | None = None, ca_bundle: str | None = None,
                 timeout: float = 300.0, retry: RetryPolicy | None = None,
                 pool_size: int = 16) -> None:
        self.url = url.rstrip("/")
        self.auth_config = auth or AuthConfig()
        self.ca_bundle = ca_bundle
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.pool_size = pool_size
        # Passed with every request: a session-level setting would lose to $REQUESTS_CA_BUNDLE.
        self.verify = ca_bundle or True  # never False
        self.session = self._session(RETRYABLE_STATUS)
        self._transcoding: requests.Session | None = None

    def _session(self, retried: frozenset[int]) -> requests.Session:
        session = requests.Session()
        session.auth = self.auth_config.build(self.url)
        adapter = _BlockAdapter(
            pool_connections=self.pool_size, pool_maxsize=self.pool_size,
            max_retries=self.retry.urllib3_retry(retried))
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    @property
    def settings(self) -> dict:
        """What it takes to build an equal client elsewhere (no session, no secret)."""
        return {"url": self.url, "auth": self.auth_config, "ca_bundle": self.ca_bundle,
                "timeout": self.timeout, "retry": self.retry, "pool_size": self.pool_size}

    def __getstate__(self) -> dict:
        return self.settings

    def __setstate__(self, state: dict) -> None:
        DicomwebClient.__init__(self, **state)

    @property
    def safe_url(self) -> str:
        return redact_url(self.url)

    # -- QIDO-RS ----------------------------------------------------------
    def get_json(self, path: str, params: dict | None = None) -> list[dict]:
        """GET a DICOM JSON resource (retried); ``[]`` for 204 No Content.

        Raises
        ------
        DicomwebError
            For a connection failure after retries or an error status.
        """
        response = self._get(path, params, accept=DICOM_JSON)
        if response.status_code == 204 or not response.content:
            return []
        try:
            return response.json()
        except ValueError as exc:
            raise DicomwebError(f"GET {self.safe_url}{path}: answer is not JSON",
                                response.status_code) from exc

    def _get(self, path: str, params: dict | None, accept: str, stream: bool = False,
             session: requests.Session | None = None) -> requests.Response:
        """GET, retried by urllib3 until the answer starts and, when the body is read here
        (``stream=False``), retried here too when the body is cut off (IncompleteRead, a reset
        mid-body, a broken chunked encoding): such an answer is transient, like a 5xx."""
        attempts = 1 if stream else self.retry.attempts
        try:
            for attempt in self.retry.tries(f"GET {self.safe_url}{path}", BODY_ERRORS, attempts):
                with attempt:
                    response = (session or self.session).get(
                        f"{self.url}{path}", params=params, timeout=self.timeout, headers={"Accept": accept},
                        stream=stream, verify=self.verify)
        except requests.exceptions.SSLError as exc:
            raise DicomwebError(f"TLS verification of {self.safe_url} failed ({_short(exc)}); "
                                "give the server's CA with --ca-bundle") from None
        except BODY_ERRORS as exc:
            raise DicomwebError(f"GET {self.safe_url}{path}: the answer was cut off {attempts} times "
                                f"({_short(exc)})") from None
        except requests.exceptions.RequestException as exc:
            raise DicomwebError(f"cannot reach {self.safe_url}: {_short(exc)}") from None
        except AuthError as exc:
            raise DicomwebError(f"no credentials for {self.safe_url}: {exc}", 401) from None
        if response.status_code >= 400:
            raise DicomwebError(
                f"GET {self.safe_url}{path} answered {response.status_code} {response.reason}",
                response.status_code, response.text[:500])
        return response

    def paged(self, path: str, params: dict | None = None) -> Iterator[dict]:
        """Every QIDO-RS result of ``path``, fetched ``PAGE_SIZE`` at a time (never unbounded)."""
        offset = 0
        while True:
            page = self.get_json(path, {**(params or {}), "limit": PAGE_SIZE, "offset": offset})
            yield from page
            if len(page) < PAGE_SIZE:
                return
            offset += len(page)

    def series_instances(self, study: str, series: str) -> set[str]:
        """The SOP Instance UIDs the server holds in one series (paged QIDO-RS; empty if none)."""
        items = self.paged(f"/studies/{study}/series/{series}/instances", {"includefield": SOP_UID})
        return {sop for item in items if (sop := first_value(item, SOP_UID))}

    def series_count(self, study: str, series: str) -> int | None:
        """How many instances the server holds in one series (series-level QIDO-RS,
        NumberOfSeriesRelatedInstances): 0 for a series it does not hold; None when its answer
        does not say (the attribute is optional to return), or names another series."""
        try:
            found = self.get_json(f"/studies/{study}/series",
                                  {"SeriesInstanceUID": series, "includefield": SERIES_INSTANCES})
        except DicomwebError as exc:
            if exc.status == 404:  # an unknown study, for some servers
                return 0
            raise
        if not isinstance(found, list):
            return None
        if not found:
            return 0
        item = found[0]
        if len(found) != 1 or not isinstance(item, dict):
            return None
        try:
            named, count = first_value(item, SERIES_UID), first_value(item, SERIES_INSTANCES)
        except (AttributeError, TypeError):  # not the DICOM JSON model
            return None
        if named not in (series, None):
            return None
        if isinstance(count, str) and count.strip().isdigit():  # IS as a string, as some servers give it
            count = int(count)
        return count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else None

    def existing_instances(self, sop_uids: Iterable[str]) -> set[str]:
        """Which of ``sop_uids`` the server already holds (one QIDO-RS request)."""
        uids = sorted(set(sop_uids))
        if not uids:
            return set()
        found = self.get_json("/instances", {"SOPInstanceUID": ",".join(uids),
                                             "includefield": SOP_UID, "limit": len(uids)})
        return {uid for item in found for uid in values(item, SOP_UID)} & set(uids)

    def check(self) -> None:
        """Fail fast if the server cannot be reached or refuses our credentials."""
        self.get_json("/studies", {"limit": 1})

    # -- STOW-RS ----------------------------------------------------------
    def store(self, parts: Sequence[tuple[str, int]]) -> tuple[int, dict]:
        """POST instances (``(url, size)`` pairs) to ``/studies``; retried when transient.

        Returns
        -------
        (status, response JSON dataset or ``{}``)

        Raises
        ------
        DicomwebError
            When retries are exhausted or on a connection failure.
        """
        try:
            for attempt in self.retry.tries(f"STOW-RS to {self.safe_url}", (requests.exceptions.RequestException,)):
                with attempt:
                    body = MultipartBody(parts)
                    response = self.session.post(
                        f"{self.url}/studies", data=body, timeout=self.timeout, verify=self.verify,
                        headers={"Content-Type": body.content_type, "Accept": DICOM_JSON})
                    if response.status_code in RETRYABLE_STATUS and not attempt.last:
                        raise RetryableAnswer(response.status_code,
                                              parse_retry_after(response.headers.get("Retry-After")))
        except requests.exceptions.SSLError as exc:
            raise DicomwebError(f"TLS verification of {self.safe_url} failed ({_short(exc)}); "
                                "give the server's CA with --ca-bundle") from None
        except AuthError as exc:
            raise DicomwebError(f"no credentials for {self.safe_url}: {exc}", 401) from None
        except requests.exceptions.RequestException as exc:
            raise DicomwebError(f"STOW-RS to {self.safe_url} failed: {_short(exc)}") from None
        return response.status_code, _json_or_empty(response)

    # -- WADO-RS ----------------------------------------------------------
    def retrieve(self, path: str, transfer_syntax: str = "*") -> requests.Response:
        """GET a multipart WADO-RS resource as a stream (``path`` like ``/studies/S/series/SE``).

        Raises
        ------
        TranscodingError
            A transfer syntax other than ``*`` was refused (400, 406, 415) or failed (500): a
            server that cannot transcode fails the same way every time, so it is not retried
            (Orthanc answers 500 for JPEG 2000 without its GDCM plugin).
        DicomwebError
            Any other failure, after retries.
        """
        accept = f'multipart/related; type="application/dicom"; transfer-syntax={transfer_syntax}'
        if transfer_syntax == "*":
            return self._get(path, None, accept=accept, stream=True)
        if self._transcoding is None:
            self._transcoding = self._session(RETRYABLE_STATUS - {500})
        try:
            return self._get(path, None, accept=accept, stream=True, session=self._transcoding)
        except DicomwebError as exc:
            if exc.status in (400, 406, 415, 500):
                raise TranscodingError(
                    f"the server answered {exc.status} when asked for transfer syntax {transfer_syntax}: it "
                    "cannot provide it (export as stored with --transfer-syntax '*')", exc.status, exc.body) from None
            raise

    def retrieve_to_files(self, path: str, new_file: Callable[[], tuple[str, BinaryIO]],
                          transfer_syntax: str = "*", attempts: int = 1) -> Iterator[tuple[str, int]]:
        """``(file, size)`` for each instance of a WADO-RS answer, as soon as its bytes are all on disk.

        The answer is parsed as it streams (bounded memory whatever its size); each
        part goes to a file from ``new_file()``, which is removed once the caller
        has moved on to the next part (move or copy it away before). ``attempts``
        tries in all: after an interrupted answer the parts are yielded again from
        the first, so callers skip what they already have.

        Raises
        ------
        DicomwebError
            When the answer keeps failing, or on an error status.
        """
        try:
            for attempt in self.retry.tries(f"WADO-RS {path}", (MultipartError, requests.RequestException), attempts):
                with attempt, self.retrieve(path, transfer_syntax) as response:
                    boundary = boundary_of(response.headers.get("Content-Type", ""))
                    for _, part_path, size in iter_parts_to_files(response.iter_content(CHUNK), boundary,
                                                                  new_file):
                        try:
                            yield part_path, size
                        finally:
                            remove_quietly(part_path)
        except (MultipartError, requests.RequestException) as exc:
            raise DicomwebError(f"retrieval of {path} kept failing: {_short(exc)}") from None


def _json_or_empty(response: requests.Response) -> dict:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _short(exc: BaseException) -> str:
    text = redact(str(exc))
    return text if len(text) < 300 else text[:300] + "..."


def paged(client: DicomwebClient, path: str, params: dict | None = None) -> Iterator[dict]:
    """Every QIDO-RS result of ``path`` on ``client``, a page at a time (see ``DicomwebClient.paged``)."""
    return client.paged(path, params)
