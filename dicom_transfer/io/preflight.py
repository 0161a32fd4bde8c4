"""Checks before a run: every location it reads or writes can be used.

A run that would fail on its first file, or only at its very end (an
unwritable report path), is refused before it starts, in seconds, with one
line that says what to fix: an unknown scheme, a backend that is not
installed, credentials that are missing or malformed, a bucket that does not
exist or cannot be reached, a destination that is a file or read-only.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import os
import socket
import threading
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit

from dicom_transfer.errors import redact, redact_url
from dicom_transfer.io.files import scheme_of

# scheme -> (the fsspec backend's module, the extra that installs it)
BACKENDS = {
    "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs"),
    "s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"),
    "az": ("adlfs", "azure-blob"), "abfs": ("adlfs", "azure-blob"), "abfss": ("adlfs", "azure-blob"),
}
SUPPORTED = "local paths, file://, gs://, s3://, az:// (abfs://)"
DEADLINE_SECONDS = float(os.environ.get("DICOM_TRANSFER_PREFLIGHT_SECONDS", "30"))

# What the storage SDKs say when credentials are missing or malformed -> what to do about it.
_CREDENTIAL_PROBLEMS = (
    ("Must provide either a connection_string or account_name with credentials",
     "no Azure credentials: set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_NAME with "
     "AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN"),
    ("Connection string is either blank or malformed",
     "AZURE_STORAGE_CONNECTION_STRING is blank or malformed (expected "
     "'AccountName=...;AccountKey=...;BlobEndpoint=http(s)://...')"),
    ("Invalid base64-encoded string",
     "the Azure account key is not valid base64 (AZURE_STORAGE_ACCOUNT_KEY, or AccountKey= in the "
     "connection string)"),
    ("Incorrect padding",
     "the Azure account key is not valid base64 (AZURE_STORAGE_ACCOUNT_KEY, or AccountKey= in the "
     "connection string)"),
)


class StoreUnavailable(Exception):
    """A location cannot be used (unsupported, missing backend or credentials, missing, forbidden,
    unreachable, not writable)."""


def check_scheme(url: str, what: str) -> None:
    """The scheme of ``url`` is supported and its backend installed.

    Raises
    ------
    StoreUnavailable
        Naming the scheme and, for a missing backend, the ``pip install`` that adds it.
    """
    scheme = scheme_of(url)
    if scheme is None:
        return
    name = scheme[:-3]
    if name not in BACKENDS:
        raise StoreUnavailable(f"{what} {redact_url(url)}: unsupported scheme {scheme} (supported: {SUPPORTED})")
    module, extra = BACKENDS[name]
    if not _installed(module):
        raise StoreUnavailable(f"{what} {redact_url(url)}: {scheme} needs {module}, which is not installed: "
                               f"pip install 'dicom-transfer[{extra}]'")
    if name in ("az", "abfs", "abfss"):
        _check_azure_endpoint()


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses it, or a module set to None in sys.modules
        return False


def _check_azure_endpoint() -> None:
    settings = _connection_settings()
    for key, where in ((settings.get("AccountKey"), "AccountKey= in AZURE_STORAGE_CONNECTION_STRING"),
                       (os.environ.get("AZURE_STORAGE_ACCOUNT_KEY"), "AZURE_STORAGE_ACCOUNT_KEY")):
        if key is not None:
            try:
                base64.b64decode(key, validate=True)
            except (binascii.Error, ValueError):
                raise StoreUnavailable(f"the Azure account key is not valid base64 ({where})") from None
    endpoint = settings.get("BlobEndpoint")
    if endpoint is not None and "://" not in endpoint:
        raise StoreUnavailable(
            f"BlobEndpoint={redact(endpoint)} in AZURE_STORAGE_CONNECTION_STRING has no scheme: write "
            f"BlobEndpoint=http://{endpoint} (or https://)")


# Where each backend finds a custom endpoint (emulators, MinIO, sovereign clouds).
ENDPOINT_VARIABLES = {"gcsfs": ("STORAGE_EMULATOR_HOST",), "s3fs": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")}


def custom_endpoint(url: str) -> tuple[str, str] | None:
    """``(endpoint URL, where it was set)`` when the store of ``url`` is reached at a custom endpoint."""
    scheme = scheme_of(url)
    if scheme is None or scheme[:-3] not in BACKENDS:
        return None
    module = BACKENDS[scheme[:-3]][0]
    for variable in ENDPOINT_VARIABLES.get(module, ()):
        if os.environ.get(variable):
            return os.environ[variable], variable
    if module == "adlfs":
        endpoint = _connection_settings().get("BlobEndpoint")
        if endpoint:
            return endpoint, "BlobEndpoint in AZURE_STORAGE_CONNECTION_STRING"
    return None


def check_endpoint_answers(url: str, what: str, seconds: float = 5.0) -> None:
    """A custom endpoint accepts connections: a dead emulator is reported at once, not after the
    SDK's minutes of retries."""
    found = custom_endpoint(url)
    if found is None:
        return
    endpoint, where = found
    parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "localhost", port), timeout=seconds).close()
    except OSError as exc:
        raise StoreUnavailable(f"{what} cannot be reached: {parts.hostname}:{port} (from {where}) does not "
                               f"accept connections ({exc.strerror or type(exc).__name__})") from None


def _connection_settings() -> dict[str, str]:
    text = os.environ.get("AZURE_STORAGE_CONNECTION_STRING", "")
    return dict(part.split("=", 1) for part in text.split(";") if "=" in part)


def credential_problem(exc: BaseException) -> str | None:
    """What to fix, if ``exc`` says credentials are missing or malformed."""
    text = str(exc)
    return next((advice for clue, advice in _CREDENTIAL_PROBLEMS if clue in text), None)


def within_deadline(check: Callable[[], None], what: str, seconds: float = DEADLINE_SECONDS) -> None:
    """Run ``check``; a check that has not answered in ``seconds`` means unreachable.

    SDKs retry a dead endpoint with backoff for minutes; a user waiting for a
    run to start should learn within seconds that it cannot.
    """
    failure: list[BaseException] = []

    def run() -> None:
        try:
            check()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name="preflight", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise StoreUnavailable(f"{what} cannot be reached: no answer within {seconds:.0f} s "
                               "(check the endpoint, the network and the credentials)")
    if failure:
        raise failure[0]


def check_writable_folder(path: str, what: str) -> None:
    """``path`` is, or can be made, a folder this process can write to (a probe file is made and removed)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise StoreUnavailable(f"{what} {path} is a file, not a folder")
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".dicom-transfer-probe-{uuid.uuid4().hex}")
        with open(probe, "wb"):
            pass
        os.remove(probe)
    except OSError as exc:
        raise StoreUnavailable(f"{what} {path} is not writable: {exc.strerror or exc}") from None


def check_writable_file(path: str, what: str) -> None:
    """A report can be written at ``path`` (a device such as /dev/stdout is fine)."""
    if os.path.isdir(path):
        raise StoreUnavailable(f"{what} {path} is a folder, not a file")
    if os.path.exists(path) and not os.path.isfile(path):
        return  # /dev/stdout, a named pipe: written in place
    check_writable_folder(os.path.dirname(os.path.abspath(path)), f"{what}'s folder")
