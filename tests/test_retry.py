"""The retry policy and its one loop (io/retry.py), without a server: what is retried, how often,
how long it waits, and what reaches the caller."""

from __future__ import annotations

import email.utils
import time

import pytest
import requests

from dicom_transfer.io import retry as retry_module
from dicom_transfer.io.retry import RetryableAnswer, RetryPolicy, parse_retry_after


@pytest.mark.parametrize(("header", "seconds"), [
    (None, None),
    ("", None),
    ("7", 7.0),
    ("  12 ", 12.0),
    ("-3", None),  # not delta-seconds, not a date
    ("soon", None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date in the past: no wait
])
def test_parse_retry_after(header, seconds):
    assert parse_retry_after(header) == seconds


def test_parse_retry_after_a_date_in_the_future():
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 55 <= parse_retry_after(in_a_minute) <= 60


@pytest.mark.parametrize(("attempt", "retry_after", "low", "high"), [
    (0, None, 0.0, 0.5), (3, None, 0.0, 4.0), (20, None, 0.0, 30.0),  # full jitter below the cap
    (0, 5.0, 5.0, 5.0), (0, 1000.0, 120.0, 120.0), (0, -1.0, 0.0, 0.0),  # Retry-After, capped
])
def test_delay(attempt, retry_after, low, high):
    for _ in range(50):
        assert low <= RetryPolicy().delay(attempt, retry_after) <= high


@pytest.fixture
def waits(monkeypatch):
    """The waits the loop asked for, instead of sleeping."""
    asked: list[float | None] = []
    monkeypatch.setattr(RetryPolicy, "sleep", lambda self, attempt, retry_after=None: asked.append(retry_after))
    return asked


def run(policy: RetryPolicy, outcomes: list, transient=(ConnectionError,)):
    """Run the loop over ``outcomes`` (an exception to raise, or a value to return), as callers do."""
    calls = iter(outcomes)
    tries = 0
    for attempt in policy.tries("test", transient):
        with attempt:
            tries += 1
            outcome = next(calls)
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome, tries
    raise AssertionError("the loop ended without a result")


def test_a_transient_failure_is_retried_until_a_try_succeeds(waits):
    assert run(RetryPolicy(attempts=4), [ConnectionError("reset"), ConnectionError("reset"), "ok"]) == ("ok", 3)
    assert waits == [None, None]


def test_the_last_try_s_failure_reaches_the_caller(waits):
    with pytest.raises(ConnectionError, match="third"):
        run(RetryPolicy(attempts=3), [ConnectionError("first"), ConnectionError("second"), ConnectionError("third")])
    assert len(waits) == 2


def test_a_failure_that_is_not_transient_is_not_retried(waits):
    with pytest.raises(ValueError):
        run(RetryPolicy(attempts=5), [ValueError("a bug or a bad answer"), "never reached"])
    assert waits == []


def test_a_tls_verification_failure_is_never_retried(waits):
    with pytest.raises(requests.exceptions.SSLError):
        run(RetryPolicy(attempts=5), [requests.exceptions.SSLError("certificate verify failed"), "no"],
            transient=(requests.exceptions.RequestException,))
    assert waits == []


def test_a_retryable_answer_waits_what_the_server_asked(waits):
    assert run(RetryPolicy(attempts=3), [RetryableAnswer(503, 2.5), "stored"]) == ("stored", 2)
    assert waits == [2.5]


def test_the_loop_also_drives_generators_that_restart_from_the_first_item(waits):
    """As streamed WADO-RS: an answer cut off is asked for again; the items come again from the first."""
    answers = iter([[1, 2, ConnectionError("cut off")], [1, 2, 3]])

    def items():
        for attempt in RetryPolicy(attempts=3).tries("stream", (ConnectionError,)):
            with attempt:
                for item in next(answers):
                    if isinstance(item, BaseException):
                        raise item
                    yield item

    assert list(items()) == [1, 2, 1, 2, 3]
    assert waits == [None]


def test_each_retry_is_logged_without_secrets(waits, caplog):
    caplog.set_level("INFO", logger=retry_module.__name__)
    run(RetryPolicy(attempts=2), [ConnectionError("https://user:hunter2@host/x?sig=abc failed"), "ok"])
    assert "retrying" in caplog.text and "hunter2" not in caplog.text and "sig=abc" not in caplog.text
