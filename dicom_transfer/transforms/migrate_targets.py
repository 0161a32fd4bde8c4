"""Where a migration stores: a DICOMweb server (QIDO-RS, STOW-RS) or a PACS (C-FIND, C-STORE).

:class:`~dicom_transfer.transforms.migrate.MigrateSeries` asks its target, per series, which
instances it holds, sends it what is missing, and asks again to verify. A target is carried
to the workers inside the DoFn (picklable settings only) and opens its clients in ``setup()``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from dicom_transfer.dimse import FAILURE, WARNING, status_text, store_outcome
from dicom_transfer.elements import ValidInstance
from dicom_transfer.io.dicomweb import DicomwebClient, DicomwebError
from dicom_transfer.io.stow_requests import StowSender
from dicom_transfer.stow import SUCCESS

if TYPE_CHECKING:  # imported by a PACS target only: pynetdicom and pydicom take ~0.3 s to import
    from dicom_transfer.io.dimse import DimseSettings

LOG = logging.getLogger(__name__)
Sent = tuple[ValidInstance, str, str]  # (instance, success|warning|unchanged|failure, message)


def held_instances(client: DicomwebClient, study: str, series: str) -> set[str]:
    """The SOP Instance UIDs ``client``'s server holds in one series (paged QIDO-RS; an
    unknown series holds none).

    Raises
    ------
    DicomwebError
        When the server cannot answer.
    """
    try:
        return client.series_instances(study, series)
    except DicomwebError as exc:
        if exc.status == 404:
            return set()
        raise


class MigrationTarget:
    """The destination of a migration (see the module docstring)."""

    errors: tuple[type[Exception], ...] = ()  # what ``held`` raises when the target cannot answer
    questions_at_once = 1  # how many threads may call ``held`` at once (the reconciliation's questions)
    protocol = ""  # how instances are sent, for messages: STOW-RS, C-STORE
    verifies_bytes = False  # ``client`` retrieves what was stored (``--verify-bytes``)

    def setup(self) -> None:
        """Open the clients (a DoFn's ``setup()``)."""

    def teardown(self) -> None:
        """Close them (a DoFn's ``teardown()``)."""

    def held(self, study: str, series: str) -> set[str]:
        """The SOP Instance UIDs the target holds in one series; raises one of ``errors``."""
        raise NotImplementedError

    def send(self, group: Sequence[ValidInstance]) -> list[Sent]:
        """Store ``group`` (called on a thread of the DoFn's pool): one answer per instance."""
        raise NotImplementedError

    def location(self, study: str, series: str, sop: str) -> str:
        """Where an instance is held, for the outcome records (no secret in it)."""
        raise NotImplementedError

    @property
    def name(self) -> str:
        """The target for the summary (no secret in it)."""
        raise NotImplementedError


class DicomwebTarget(MigrationTarget):
    """A DICOMweb server: QIDO-RS per series, batched STOW-RS (no QIDO-RS per request: what the
    server holds is asked once per series, before anything moves)."""

    errors = (DicomwebError,)
    protocol = "STOW-RS"
    verifies_bytes = True
    questions_at_once = 4  # QIDO-RS on one session; a server answers several at once

    def __init__(self, client: DicomwebClient) -> None:
        self.settings = client.settings
        self.safe_url = client.safe_url

    def setup(self) -> None:
        self.client = DicomwebClient(**self.settings)
        self.sender: StowSender[ValidInstance] = StowSender(self.client, check_existing=False)

    def held(self, study: str, series: str) -> set[str]:
        return held_instances(self.client, study, series)

    def send(self, group: Sequence[ValidInstance]) -> list[Sent]:
        return self.sender.send(group)

    def location(self, study: str, series: str, sop: str) -> str:
        return f"{self.safe_url}/studies/{study}/series/{series}/instances/{sop}"

    @property
    def name(self) -> str:
        return self.safe_url


class PacsTarget(MigrationTarget):
    """A PACS over DIMSE: image-level C-FIND per series, C-STORE on the worker's pooled
    associations (:class:`~dicom_transfer.io.c_store.CStoreSender`, as ``import`` does), each
    data set in its own transfer syntax. A group goes on one association: the DoFn's pool
    sends ``concurrency`` groups at once, so that many associations (at most
    ``max_associations``) are open."""

    protocol = "C-STORE"

    def __init__(self, settings: DimseSettings) -> None:
        from dicom_transfer.io.dimse import DimseError

        self.settings = settings
        self.errors = (DimseError,)

    def setup(self) -> None:
        from dicom_transfer.io.c_store import CStoreSender

        self.sender = CStoreSender(self.settings)

    def teardown(self) -> None:
        if getattr(self, "sender", None) is not None:
            self.sender.close()

    def held(self, study: str, series: str) -> set[str]:
        return self.sender.held(study, series)

    def send(self, group: Sequence[ValidInstance]) -> list[Sent]:
        answers: list[Sent] = []
        for instance, code, why_not in self.sender.send(group, lanes=1):
            if code is None:
                answers.append((instance, FAILURE, why_not))
                continue
            outcome = store_outcome(code)
            if outcome == WARNING:
                LOG.warning("%s/%s/%s: C-STORE answered %s", instance.study_uid, instance.series_uid,
                            instance.sop_uid, status_text(code))
            message = "stored" if outcome == SUCCESS else f"C-STORE answered {status_text(code)}"
            answers.append((instance, outcome, message))
        return answers

    def location(self, study: str, series: str, sop: str) -> str:
        return f"{self.settings.peer}/{study}/{series}/{sop}"

    @property
    def name(self) -> str:
        return str(self.settings.peer)


def migration_target(destination: DicomwebClient | DimseSettings) -> MigrationTarget:
    """The target for a DICOMweb client's server or a PACS's settings."""
    if isinstance(destination, DicomwebClient):
        return DicomwebTarget(destination)
    return PacsTarget(destination)
