"""Send instances to a DICOMweb server in STOW-RS requests, one outcome per instance.

Shared by ``import`` (files) and ``migrate`` (instances spooled from another
server): instances the server already holds are found with one QIDO-RS query
per request; a request refused as a whole is split in halves until the culprit
is alone, so that one bad instance never fails its neighbours; transient
errors are retried by :meth:`DicomwebClient.store` (Retry-After honoured).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

from dicom_transfer.errors import IO_ERRORS, error_text
from dicom_transfer.io.dicomweb import DicomwebClient, DicomwebError
from dicom_transfer.stow import FAILURE, SUCCESS, UNCHANGED, interpret_stow

SPLIT_STATUSES = frozenset({400, 413, 415, 422})
PER_INSTANCE_STATUSES = frozenset({200, 202, 409})
STATUS_REASONS = {401: "authentication failed", 403: "permission denied",
                  404: "no STOW-RS endpoint at this URL", 413: "instance too large for the server"}


class Storable(Protocol):
    """An instance on disk (or in a store) that can be sent: where, how big, and its SOP UID."""

    @property
    def url(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def sop_uid(self) -> str: ...


T = TypeVar("T", bound=Storable)
Result = tuple[T, str, str]  # (instance, success|unchanged|failure, message)


class StowSender(Generic[T]):
    """Store groups of instances on one server; see the module docstring.

    Example::

        sender = StowSender(DicomwebClient("http://host/dicom-web"))
        for instance, kind, message in sender.store(group): ...
    """

    def __init__(self, client: DicomwebClient, check_existing: bool = True, dry_run: bool = False,
                 existing: Callable[[Sequence[T]], set[str]] | None = None) -> None:
        """``existing``: which SOP UIDs of a group the server holds (default: one QIDO-RS query
        for the group's UIDs); raises DicomwebError when it cannot tell."""
        self.client = client
        self.check_existing = check_existing
        self.dry_run = dry_run
        self.existing = existing or (lambda group: client.existing_instances(i.sop_uid for i in group))

    def store(self, group: Sequence[T]) -> list[Result]:
        """One outcome per instance of ``group`` (sent in one request, split if refused whole)."""
        results: list[Result] = []
        if self.check_existing:
            try:
                existing = self.existing(group)
            except DicomwebError:
                existing = set()  # the STOW answer decides instead
            results += [(i, UNCHANGED, "already stored") for i in group if i.sop_uid in existing]
            group = [i for i in group if i.sop_uid not in existing]
        if group and self.dry_run:  # what the server does not hold would be sent: nothing is
            return results + [(i, SUCCESS, "would be stored") for i in group]
        if group:
            results += self.send(group)
        return results

    def send(self, group: Sequence[T]) -> list[Result]:
        """POST ``group`` without asking first; split in halves when refused as a whole."""
        try:
            status, answer = self.client.store([(i.url, i.size) for i in group])
        except DicomwebError as exc:
            return [(i, FAILURE, str(exc)) for i in group]
        except IO_ERRORS as exc:  # a source changed, vanished or could not be read while being sent
            if len(group) > 1:
                return self._split(group)
            return [(group[0], FAILURE, f"cannot read while sending: {error_text(exc)}")]
        if status in PER_INSTANCE_STATUSES:
            outcomes = interpret_stow(status, answer, [i.sop_uid for i in group])
            return [(i, *outcomes[i.sop_uid]) for i in group]
        if status in SPLIT_STATUSES and len(group) > 1:
            return self._split(group)  # find the culprit instead of failing good instances
        message = f"STOW-RS answered {status}"
        if status in STATUS_REASONS:
            message += f" ({STATUS_REASONS[status]})"
        return [(i, FAILURE, message) for i in group]

    def _split(self, group: Sequence[T]) -> list[Result]:
        middle = len(group) // 2
        return self.send(group[:middle]) + self.send(group[middle:])
