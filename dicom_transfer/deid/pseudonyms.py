"""Keyed, consistent pseudonyms: the same original always gives the same replacement.

Every replacement is an HMAC-SHA256 of the original under the run's secret key (with a
different label per kind of value), so that every worker, every re-run and every later batch
with the same key maps the same original to the same UID, patient id or date offset, without
any shared state; without the key, the originals cannot be recovered or tested for.
"""

from __future__ import annotations

import hmac

MIN_KEY_BYTES = 16
MAX_DATE_SHIFT_DAYS = 3652  # dates move back by 1 day to 10 years, per patient
DIGESTS_KEPT = 65536  # replacements remembered per process (then forgotten at once)


class DeidKeyError(ValueError):
    """The de-identification key is missing or unusable (the message never contains it)."""


def check_key(key: bytes) -> bytes:
    """``key`` itself, if it can be used; raise :class:`DeidKeyError` otherwise."""
    if len(key) < MIN_KEY_BYTES:
        raise DeidKeyError(f"the de-identification key has {len(key)} bytes: use at least {MIN_KEY_BYTES} "
                           "(e.g. 32 random bytes: openssl rand -hex 32)")
    return key


class Pseudonyms:
    """Replacements derived from ``key``. Never pickled: workers load the key themselves.

    Examples
    --------
    >>> p = Pseudonyms(b"0123456789abcdef0123456789abcdef")
    >>> p.uid("1.2.3") == p.uid("1.2.3") and p.uid("1.2.3").startswith("2.25.")
    True
    """

    def __init__(self, key: bytes) -> None:
        self._key = check_key(key)
        self._digests: dict[tuple[bytes, str], bytes] = {}  # the study's and series' UIDs recur in each instance

    def __reduce__(self):
        raise TypeError("the de-identification key is never pickled: build Pseudonyms on the worker")

    def _digest(self, label: bytes, original: str) -> bytes:
        found = self._digests.get((label, original))
        if found is None:
            if len(self._digests) >= DIGESTS_KEPT:
                self._digests.clear()
            found = self._digests[(label, original)] = self._hmac(label, original)
        return found

    def _hmac(self, label: bytes, original: str) -> bytes:
        return hmac.digest(self._key, label + b"\x00" + original.encode("utf-8"), "sha256")  # one-shot HMAC

    def uid(self, original: str) -> str:
        """A ``2.25.`` UID (PS3.5 B.2) from a UUID made of the HMAC (RFC 9562 version 8)."""
        number = int.from_bytes(self._digest(b"uid", original)[:16], "big")
        number = (number & ~(0xF << 76)) | (0x8 << 76)  # version 8: custom
        number = (number & ~(0x3 << 62)) | (0x2 << 62)  # RFC variant
        return f"2.25.{number}"

    def patient_id(self, original: str) -> str:
        """A pseudonymous Patient ID (LO): ``DT`` and 20 hexadecimal digits."""
        return "DT" + self._digest(b"patient-id", original).hex()[:20].upper()

    def date_offset_days(self, patient_id: str) -> int:
        """Days to add to every date of the patient whose original id is ``patient_id`` (negative)."""
        value = int.from_bytes(self._digest(b"date-offset", patient_id)[:8], "big")
        return -(1 + value % MAX_DATE_SHIFT_DAYS)
