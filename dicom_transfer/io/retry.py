"""Bounded retries with exponential backoff and full jitter, honouring ``Retry-After``.

The one home of the HTTP retry policy: how many tries and how long between them
(:class:`RetryPolicy`, from ``--max-attempts``), which answers are transient
(:data:`RETRYABLE_STATUS`), which failures while reading a body are transient
(:data:`BODY_ERRORS`) and the same policy as urllib3 applies it
(:meth:`RetryPolicy.urllib3_retry`), and the one retry loop (:meth:`RetryPolicy.tries`).
``io.dicomweb`` uses them: GET and HEAD are retried by urllib3 until the answer starts,
then by ``tries`` when a body read whole is cut off; STOW-RS (a streamed body urllib3
cannot resend) and streamed WADO-RS answers are retried by ``tries`` alone.
"""

from __future__ import annotations

import dataclasses
import email.utils
import logging
import random
import time
from collections.abc import Iterable, Iterator
from types import TracebackType

import requests
from urllib3.util.retry import Retry

from dicom_transfer.errors import first_line, redact

LOG = logging.getLogger(__name__)

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

    def tries(self, what: str, transient: tuple[type[BaseException], ...],
              attempts: int | None = None) -> Iterator[Attempt]:
        """The retry loop: up to ``attempts`` (default: the policy's) tries of the block run
        ``with`` each :class:`Attempt`; a ``transient`` exception (or :class:`RetryableAnswer`)
        ends a try, is logged and waited for; any other exception, or the last try's, propagates.
        The loop ends after the first try whose block finishes (or returns).

        Example::

            for attempt in policy.tries("STOW-RS", (requests.RequestException,)):
                with attempt:
                    return post()
        """
        count = self.attempts if attempts is None else attempts
        for number in range(count):
            attempt = Attempt(self, what, (*transient, RetryableAnswer), number, last=number + 1 >= count)
            yield attempt
            if attempt.done:
                return

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


class RetryableAnswer(Exception):
    """Raised in a try whose answer is transient (e.g. a 503) and may be retried, with the
    ``Retry-After`` seconds the server asked for; on the last try, use the answer instead."""

    def __init__(self, status: int, retry_after: float | None = None) -> None:
        super().__init__(f"answered {status}")
        self.retry_after = retry_after


class Attempt:
    """One try of :meth:`RetryPolicy.tries`: the context its block runs in (``last`` tells
    whether another try follows)."""

    def __init__(self, policy: RetryPolicy, what: str, transient: tuple[type[BaseException], ...],
                 number: int, last: bool) -> None:
        self.policy = policy
        self.what = what
        self.transient = transient
        self.number = number
        self.last = last
        self.done = False

    def __enter__(self) -> Attempt:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> bool:
        if exc is None:
            self.done = True
            return False
        if self.last or not isinstance(exc, self.transient) or isinstance(exc, requests.exceptions.SSLError):
            return False  # (a TLS verification failure will not pass on a retry)
        LOG.info("%s: %s; retrying (try %d failed)", self.what, redact(first_line(exc)), self.number + 1)
        self.policy.sleep(self.number, getattr(exc, "retry_after", None))
        return True
