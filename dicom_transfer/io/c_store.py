"""Store Part-10 files on a PACS with C-STORE, one status per instance.

Shared by ``import --dimse-destination`` (files) and ``migrate --dimse-destination``
(instances spooled from the source), as :mod:`dicom_transfer.io.stow_requests` is for
STOW-RS. Associations come from the worker's :class:`AssociationPool`; each
association is negotiated for the SOP classes and transfer syntaxes at hand (each
data set goes as its file holds it: nothing is transcoded) plus the C-FIND model, so
that the next series' question reuses it. When an association breaks or is refused,
the rest go on a new one; the instance at hand is tried ``ATTEMPTS`` times in all.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import tempfile
import time
from collections.abc import Sequence
from typing import Protocol, TypeVar

from dicom_transfer.dimse import group_contexts
from dicom_transfer.errors import IO_ERRORS, error_text
from dicom_transfer.io.destination import Destination
from dicom_transfer.io.dimse import (
    EXPLICIT_AND_IMPLICIT,
    FIND_MODEL,
    DimseError,
    DimseSettings,
    NoContext,
    query,
)
from dicom_transfer.io.dimse_pool import AssociationPool
from dicom_transfer.io.files import local_path
from dicom_transfer.io.stow_requests import Storable
from dicom_transfer.part10 import FileMeta, read_file_meta

ATTEMPTS = 3  # per instance, when the association breaks or is refused
PER_LANE = 16  # instances per association at least, before another one is opened


class StorableFile(Storable, Protocol):
    """An instance that can be sent (see :class:`Storable`), and its transfer syntax."""

    @property
    def transfer_syntax(self) -> str: ...


T = TypeVar("T", bound=StorableFile)
Answer = tuple[T, "int | None", str]  # (instance, C-STORE status code or None, why not)


def file_meta_of(path: str) -> FileMeta:
    """The file meta information of a local Part-10 file (group 0002 only is read).

    Raises
    ------
    OSError, InvalidInstance
        The file cannot be read, or its file meta is malformed or incomplete.
    """
    with open(path, "rb") as stream:
        return read_file_meta(stream, os.fstat(stream.fileno()).st_size)


def local_copy(url: str, size: int) -> tuple[str, bool]:
    """A local path holding the bytes at ``url``: the file itself, or a temporary copy (``True``)."""
    path = local_path(url)
    if path is not None:
        return path, False
    handle, temporary = tempfile.mkstemp(prefix=".c-store-", suffix=".dcm")
    os.close(handle)
    try:
        Destination(os.path.dirname(temporary)).write(os.path.basename(temporary), url, size, overwrite=True)
    except BaseException:
        os.unlink(temporary)
        raise
    return temporary, True


class CStoreSender:
    """C-FIND what a PACS holds in a series, C-STORE instances; see the module docstring.

    Made in a DoFn's ``setup()`` (it joins the worker's association pool), closed in
    ``teardown()``.

    Example::

        sender = CStoreSender(settings)
        held = sender.held(study, series)
        for instance, code, why_not in sender.send(instances): ...
    """

    def __init__(self, settings: DimseSettings) -> None:
        self.settings = settings
        self.pool = AssociationPool.join(settings)
        self.lanes = concurrent.futures.ThreadPoolExecutor(settings.max_associations)

    def close(self) -> None:
        self.lanes.shutdown(wait=True)
        self.pool.leave()

    def held(self, study: str, series: str) -> set[str]:
        """The SOP Instance UIDs the PACS holds in one series (one image-level C-FIND, asked
        ``ATTEMPTS`` times in all when the association is refused or breaks).

        Raises
        ------
        DimseError
            The PACS cannot be asked or answers with a failure.
        """
        identifier = query("IMAGE", StudyInstanceUID=study, SeriesInstanceUID=series, SOPInstanceUID="")
        for attempt in range(1, ATTEMPTS + 1):  # as a C-STORE is: a refused or broken association is asked again
            try:
                with self.pool.borrow([(FIND_MODEL, EXPLICIT_AND_IMPLICIT)]) as link:
                    return {sop for item in link.find(identifier)
                            if (sop := str(item.get("SOPInstanceUID", "") or ""))}
            except DimseError:
                if attempt == ATTEMPTS:
                    raise
                time.sleep(0.2 * attempt)
        raise AssertionError("unreachable")

    def send(self, instances: Sequence[T], lanes: int | None = None) -> list[Answer]:
        """C-STORE each instance: ``(instance, status code or None, why not)`` for each. Up to
        ``lanes`` associations at once (default: one per ``PER_LANE`` instances, at most
        ``max_associations``): a PACS stores one data set while it receives the next."""
        answers: list[Answer] = []
        files: list[tuple[T, str, FileMeta, bool]] = []  # instance, local path, file meta, temporary
        for instance in instances:
            try:
                path, temporary = local_copy(instance.url, instance.size)
            except IO_ERRORS as exc:
                answers.append((instance, None, f"cannot read it: {error_text(exc)}"))
                continue
            try:
                files.append((instance, path, file_meta_of(path), temporary))
            except IO_ERRORS as exc:
                answers.append((instance, None, f"cannot read its file meta: {error_text(exc)}"))
                if temporary:
                    os.unlink(path)
        try:
            pairs = [(meta.sop_class, meta.transfer_syntax) for _, _, meta, _ in files]
            for group in group_contexts(pairs, reserved=1):
                # C-FIND too: the next series' question goes on one of these associations
                contexts = [(FIND_MODEL, EXPLICIT_AND_IMPLICIT), *((c, (syntax,)) for c, syntax in group)]
                wanted = set(group)
                chosen = [f for f in files if (f[2].sop_class, f[2].transfer_syntax) in wanted]
                count = lanes or max(1, min(self.settings.max_associations, len(chosen) // PER_LANE))
                if count == 1:
                    answers += self._store_lane(chosen, contexts)
                    continue
                for lane_answers in self.lanes.map(self._store_lane, [chosen[n::count] for n in range(count)],
                                                   [contexts] * count):
                    answers += lane_answers
        finally:
            for _, path, _, temporary in files:
                if temporary:
                    with contextlib.suppress(OSError):
                        os.unlink(path)
        return answers

    def _store_lane(self, files: list, contexts: list) -> list[Answer]:
        """C-STORE each file on a pooled association, in order."""
        answers: list[Answer] = []
        remaining = list(files)
        tries = 0
        while remaining:
            try:
                with self.pool.borrow(contexts) as link:
                    while remaining:
                        instance, path, meta, _ = remaining[0]
                        try:
                            code = link.store(path, meta)
                        except NoContext as exc:  # this instance's own problem: the rest go on
                            remaining.pop(0)
                            answers.append((instance, None, str(exc)))
                            continue
                        remaining.pop(0)
                        tries = 0
                        answers.append((instance, code, ""))
            except DimseError as exc:
                tries += 1
                if tries >= ATTEMPTS:
                    tries = 0
                    answers.append((remaining.pop(0)[0], None, f"C-STORE failed: {exc}"))
                else:
                    time.sleep(0.2 * tries)
        return answers
