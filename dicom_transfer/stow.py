"""Read a STOW-RS answer (PS3.18 §10.5.3) into one outcome per instance."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

from dicom_transfer import metrics
from dicom_transfer.dicom_json import first_value, values

FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"

# Reasons that mean "the server already has this instance": DICOM's Duplicate SOP
# Instance (0x0111) and the Azure DICOM service's 45070.
DUPLICATE_REASONS = frozenset({0x0111, 45070})
REASON_TEXT = {
    0x0110: "processing failure",
    0x0111: "duplicate SOP instance",
    0x0122: "SOP class not supported",
    0xA700: "out of resources",
    0xA900: "data set does not match SOP class",
    0xC000: "cannot understand",
    0xC122: "transfer syntax not supported",
    45070: "instance already exists",
    45071: "instance is being created by another process",
}

SUCCESS, UNCHANGED, FAILURE = metrics.SUCCESS, metrics.UNCHANGED, metrics.FAILURE


def _uid(item: dict) -> str | None:
    return first_value(item, REFERENCED_SOP_INSTANCE_UID)


def reason_text(code: int) -> str:
    name = REASON_TEXT.get(code)
    return f"FailureReason {code} (0x{code:04X}){f': {name}' if name else ''}"


def interpret_stow(status: int, answer: dict, sop_uids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Map each SOP Instance UID sent to ``(success|unchanged|failure, message)``.

    Only for the statuses that carry per-instance results: 200, 202 and 409.
    """
    failed: dict[str, int] = {}
    for item in values(answer, FAILED_SOP_SEQUENCE):
        uid = _uid(item)
        if uid is not None:
            codes = values(item, FAILURE_REASON)
            failed[uid] = int(codes[0]) if codes else -1
    referenced = {_uid(item) for item in values(answer, REFERENCED_SOP_SEQUENCE)}
    outcomes = {}
    for uid in sop_uids:
        if uid in failed:
            code = failed[uid]
            if code in DUPLICATE_REASONS:
                outcomes[uid] = (UNCHANGED, "the server already holds this instance")
            elif code < 0:
                outcomes[uid] = (FAILURE, f"STOW-RS {status}: the server refused this instance "
                                          "without a reason")
            else:
                outcomes[uid] = (FAILURE, f"STOW-RS {status}: the server refused this instance: "
                                          f"{reason_text(code)}")
        elif uid in referenced or (status == 200 and not referenced):
            outcomes[uid] = (SUCCESS, "stored")
        else:
            outcomes[uid] = (FAILURE, f"STOW-RS {status}: the server did not report this instance")
    return outcomes


class _Sized(Protocol):
    @property
    def size(self) -> int: ...


S = TypeVar("S", bound=_Sized)


class RequestBatcher(Generic[S]):
    """Groups instances, as they come, into requests of at most ``max_instances`` and
    ``max_bytes``; an instance larger than ``max_bytes`` goes alone.

    Example::

        batcher = RequestBatcher(32, 32 << 20)
        for instance in instances:
            if full := batcher.add(instance): send(full)
        if rest := batcher.flush(): send(rest)
    """

    def __init__(self, max_instances: int, max_bytes: int) -> None:
        self.max_instances = max_instances
        self.max_bytes = max_bytes
        self.current: list[S] = []
        self.size = 0

    def add(self, instance: S) -> list[S] | None:
        """Add ``instance``; return the request it did not fit in, now complete, if any."""
        full: list[S] | None = None
        if self.current and (len(self.current) >= self.max_instances
                             or self.size + instance.size > self.max_bytes):
            full = self.flush()
        self.current.append(instance)
        self.size += instance.size
        return full

    def flush(self) -> list[S] | None:
        """The request being filled (``None`` if empty), and start a new one."""
        full: list[S] | None = self.current or None
        self.current, self.size = [], 0
        return full


def plan_requests(instances: Sequence[S], max_instances: int, max_bytes: int) -> list[list[S]]:
    """Split into requests of at most ``max_instances`` and ``max_bytes``; a larger
    instance goes alone."""
    batcher: RequestBatcher[S] = RequestBatcher(max_instances, max_bytes)
    requests = [full for instance in instances if (full := batcher.add(instance))]
    if rest := batcher.flush():
        requests.append(rest)
    return requests
