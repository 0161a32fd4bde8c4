"""Credentials for DICOMweb servers, as ``requests`` auth objects.

Supported: a bearer token (given, from an environment variable, or printed by a
command and refreshed when it expires), HTTP basic, Google Application Default
Credentials (Cloud Healthcare API) and Azure AD (Azure DICOM service). Secrets
never appear in ``repr()``, logs or error records.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import requests

from dicom_transfer.errors import first_line

GOOGLE_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
AZURE_DICOM_SCOPE = "https://dicom.healthcareapis.azure.com/.default"
TOKEN_ENV_DEFAULT = "DICOMWEB_TOKEN"


class AuthError(Exception):
    """Credentials could not be obtained (message safe to print)."""


@dataclasses.dataclass(frozen=True)
class AuthConfig:
    """How to authenticate. Holds no secret value itself, only where to find it.

    Attributes
    ----------
    method:
        ``auto`` (pick from the URL and what is configured), ``none``, ``bearer``,
        ``basic``, ``google`` or ``azure``.
    token_env:
        Environment variable holding a bearer token.
    token_command:
        A command that prints a bearer token (e.g. ``gcloud auth print-access-token``).
    token_lifetime:
        Seconds after which a command's token is fetched again (also done on a 401).
    username, password_env:
        HTTP basic credentials; the password comes from the environment variable.
    """

    method: str = "auto"
    token_env: str = TOKEN_ENV_DEFAULT
    token_command: str | None = None
    token_lifetime: float = 45 * 60
    username: str | None = None
    password_env: str = "DICOMWEB_PASSWORD"

    def resolve(self, url: str) -> str:
        """The concrete method for ``url``."""
        if self.method != "auto":
            return self.method
        host = (urlsplit(url).hostname or "").lower()
        if self.token_command or os.environ.get(self.token_env):
            return "bearer"
        if self.username:
            return "basic"
        if host == "healthcare.googleapis.com":
            return "google"
        if host.endswith(".dicom.azurehealthcareapis.com"):
            return "azure"
        return "none"

    def build(self, url: str) -> requests.auth.AuthBase | None:
        """A ``requests`` auth object for ``url`` (``None`` for no authentication).

        Raises
        ------
        AuthError
            If the chosen method lacks what it needs.
        """
        method = self.resolve(url)
        if method == "none":
            return None
        if method == "basic":
            if not self.username:
                raise AuthError("basic authentication needs --username")
            password = os.environ.get(self.password_env)
            if password is None:
                raise AuthError(f"basic authentication needs the password in ${self.password_env}")
            return requests.auth.HTTPBasicAuth(self.username, password)
        if method == "bearer":
            if self.token_command:
                return TokenAuth(CommandToken(self.token_command, self.token_lifetime))
            if not os.environ.get(self.token_env):
                raise AuthError(f"bearer authentication needs a token in ${self.token_env} "
                                "or --token-command")
            return TokenAuth(EnvironmentToken(self.token_env))
        if method == "google":
            return TokenAuth(GoogleToken())
        if method == "azure":
            return TokenAuth(AzureToken())
        raise AuthError(f"unknown authentication method {method!r}")


class EnvironmentToken:
    def __init__(self, variable: str) -> None:
        self.variable = variable

    def get(self, force_refresh: bool = False) -> str:  # noqa: ARG002 - the token sources' interface
        token = os.environ.get(self.variable)
        if not token:
            raise AuthError(f"${self.variable} is empty")
        return token


class CommandToken:
    """A token printed by a command, cached for ``lifetime`` seconds."""

    def __init__(self, command: str, lifetime: float) -> None:
        self.command = command
        self.lifetime = lifetime
        self._token: str | None = None
        self._fetched = 0.0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {"command": self.command, "lifetime": self.lifetime}

    def __setstate__(self, state: dict) -> None:
        CommandToken.__init__(self, state["command"], state["lifetime"])

    def get(self, force_refresh: bool = False) -> str:
        with self._lock:
            stale = time.monotonic() - self._fetched > self.lifetime
            if self._token is None or stale or force_refresh:
                try:
                    result = subprocess.run(shlex.split(self.command), capture_output=True,
                                            text=True, timeout=60, check=False)
                except (OSError, subprocess.TimeoutExpired) as exc:
                    raise AuthError(f"token command failed to run: {type(exc).__name__}") from None
                token = result.stdout.strip()
                if result.returncode != 0 or not token:
                    raise AuthError(f"token command exited with status {result.returncode} "
                                    "and printed no token")
                self._token, self._fetched = token, time.monotonic()
            return self._token


class _CloudToken:
    """A token from a cloud SDK, fetched lazily per process (never pickled)."""

    def __init__(self) -> None:
        self._credentials: Any = None  # the SDK's credentials object, made on first use
        self._token: Any = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        _CloudToken.__init__(self)


class GoogleToken(_CloudToken):
    """Google Application Default Credentials (needs the ``google-auth`` package)."""

    def get(self, force_refresh: bool = False) -> str:
        try:
            import google.auth
            import google.auth.exceptions
            import google.auth.transport.requests
        except ImportError:
            raise AuthError("Google authentication needs: pip install 'dicom-transfer[google]'") from None
        with self._lock:
            if self._credentials is None:
                try:
                    self._credentials, _ = google.auth.default(scopes=[GOOGLE_SCOPE])
                except google.auth.exceptions.DefaultCredentialsError as exc:
                    raise AuthError(f"no Google Application Default Credentials: {exc}") from None
            if force_refresh or not self._credentials.valid:
                try:
                    self._credentials.refresh(google.auth.transport.requests.Request())
                except google.auth.exceptions.GoogleAuthError as exc:
                    raise AuthError(f"Google credentials could not be refreshed: {first_line(exc)}") from None
            return self._credentials.token


class AzureToken(_CloudToken):
    """Azure AD token for the Azure DICOM service (needs ``azure-identity``)."""

    def get(self, force_refresh: bool = False) -> str:
        try:
            from azure.core.exceptions import ClientAuthenticationError
            from azure.identity import DefaultAzureCredential
        except ImportError:
            raise AuthError("Azure authentication needs: pip install 'dicom-transfer[azure]'") from None
        with self._lock:
            if self._credentials is None:
                self._credentials = DefaultAzureCredential()
            if force_refresh or self._token is None or self._token.expires_on - time.time() < 300:
                try:
                    self._token = self._credentials.get_token(AZURE_DICOM_SCOPE)
                except ClientAuthenticationError as exc:
                    raise AuthError(f"no Azure AD token: {first_line(exc)}") from None
            return self._token.token


class TokenAuth(requests.auth.AuthBase):
    """``Authorization: Bearer`` from a token source; refreshes once on a 401."""

    def __init__(self, source) -> None:
        self.source = source

    def __repr__(self) -> str:
        return f"TokenAuth({type(self.source).__name__})"

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.source.get()}"
        request.register_hook("response", self._refresh_on_401)
        return request

    def _refresh_on_401(self, response: requests.Response, **kwargs) -> requests.Response:
        request = response.request
        if response.status_code != 401 or getattr(request, "_dicom_transfer_retried", False):
            return response
        if isinstance(self.source, EnvironmentToken) or not _rewindable(request.body):
            return response
        response.content  # noqa: B018 - release the connection
        retry = request.copy()
        retry._dicom_transfer_retried = True  # type: ignore[attr-defined]  # our mark on the request
        retry.headers["Authorization"] = f"Bearer {self.source.get(force_refresh=True)}"
        return response.connection.send(retry, **kwargs)


def _rewindable(body) -> bool:
    return body is None or isinstance(body, (bytes, str))
