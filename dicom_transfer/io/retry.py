"""Bounded retries with exponential backoff and full jitter, honouring ``Retry-After``.

The one home of the HTTP retry policy: how many tries and how long between them
(:class:`RetryPolicy`, from ``--max-attempts``), which answers are transient
(:data:`RETRYABLE_STATUS`), which failures while reading a body are transient
(:data:`BODY_ERRORS`) and the same policy as urllib3 applies it
(:meth:`RetryPolicy.urllib3_retry`). ``io.dicomweb`` uses them: GET and HEAD are retried
by urllib3 until the answer starts, then by ``DicomwebClient._get`` when a body read
whole is cut off; STOW-RS (a streamed body urllib3 cannot resend) and streamed WADO-RS
answers are retried in their own loops with :meth:`RetryPolicy.sleep`.
"""

from __future__ import annotations

import dataclasses
import email.utils
import random
import time
from collections.abc import Iterable

import requests
from urllib3.util.retry import Retry

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})

# A body that stopped before its end: requests reports urllib3's IncompleteRead (Content-Length not
# reached) and a reset mid-body (urllib3's ProtocolError) as ChunkedEncodingError, a broken
# compression as ContentDecodingError.
BODY_ERRORS = (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry.

    Attributes
    ----------
    attempts:
        Total tries, the first included.
    base, cap:
        The n-th wait is a random value in ``[0, min(cap, base * 2**n)]`` seconds.
    max_retry_after:
        Longest ``Retry-After`` honoured; longer ones are capped to this.
    """

    attempts: int = 6
    base: float = 0.5
    cap: float = 30.0
    max_retry_after: float = 120.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before try number ``attempt + 1`` (``attempt`` counts from 0)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        return random.uniform(0, min(self.cap, self.base * (2 ** attempt)))

    def sleep(self, attempt: int, retry_after: float | None = None) -> None:
        time.sleep(self.delay(attempt, retry_after))

    def urllib3_retry(self, statuses: Iterable[int] = RETRYABLE_STATUS,
                      methods: Iterable[str] = ("GET", "HEAD")) -> Retry:
        """This policy for urllib3 (an ``HTTPAdapter``'s ``max_retries``): connection and read
        errors and the ``statuses`` answers of ``methods`` are tried ``attempts`` times in all, with
        the same backoff, ``Retry-After`` honoured; the last answer is returned, not raised."""
        retries = self.attempts - 1
        return Retry(
            total=retries, connect=retries, read=retries, status=retries,
            backoff_factor=self.base, backoff_max=self.cap, backoff_jitter=self.base,
            other=0,  # a TLS verification failure will not pass on a retry
            status_forcelist=sorted(statuses), allowed_methods=list(methods),
            respect_retry_after_header=True, raise_on_status=False,
        )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
