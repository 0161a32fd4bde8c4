"""The steps of one instance that every transfer shares, without Beam: read and validate a file
(:func:`read_and_validate`), and place it at its output path (:func:`place_file`).

The transforms run them per element; so do the worker processes of a local copy
(:mod:`~dicom_transfer.io.copying`), which import this module and not Beam.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

from dicom_transfer.elements import FileRef, ValidInstance
from dicom_transfer.errors import IO_ERRORS, ErrorRecord, error_text, redact
from dicom_transfer.io.destination import Destination, ExistsWithOtherContent, Provenance
from dicom_transfer.io.files import local_path, open_url
from dicom_transfer.part10 import open_for_validation, read_head, validate_part10
from dicom_transfer.vocabulary import Stage

# Files up to this size are read in one call (and copied from memory); larger ones are walked
# from their first HEAD bytes, then with seeks (and copied without passing through Python).
LOCAL_IN_MEMORY = 64 << 10
REMOTE_IN_MEMORY = 64 << 10  # remote objects up to this size are fetched whole
REMOTE_BLOCK = 32 << 10  # otherwise in ranged reads of this size
HEAD = 32 << 10


def plain_value(value: object) -> object:
    """pydicom values as plain strings (or tuples of strings for multi-values)."""
    if isinstance(value, (str, int, float)):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return value.decode("ascii", "replace")
    if isinstance(value, Iterable):  # MultiValue
        return tuple(str(v) for v in value)
    return str(value)


def validate_file(ref: FileRef, keywords: Iterable[str] = ()) -> ValidInstance:
    """Validate the file ``ref`` points to.

    Raises
    ------
    InvalidInstance
        The file is not an acceptable instance.
    OSError
        The file cannot be read.
    """
    return read_and_validate(ref, keywords)[0]


def read_and_validate(ref: FileRef, keywords: Iterable[str] = ()) -> tuple[ValidInstance, bytes | None]:
    """Validate the file ``ref`` points to, and return its bytes too when it was read whole
    (a small file: one read), so that copying it needs no second read; ``None`` otherwise.

    Raises
    ------
    InvalidInstance
        The file is not an acceptable instance.
    OSError
        The file cannot be read.
    """
    local = local_path(ref.url) is not None
    # Remote objects are read in small ranges: the header, then seeks over the values.
    with open_url(ref.url, block_size=REMOTE_BLOCK, size=ref.size) as raw:
        stream = open_for_validation(raw, ref.size, LOCAL_IN_MEMORY if local else REMOTE_IN_MEMORY)
        data = stream.getvalue() if isinstance(stream, io.BytesIO) else None
        head = None if data is not None else read_head(raw, HEAD)
        header = validate_part10(stream, ref.size, keywords, head)
    instance = ValidInstance(
        ref.url, ref.size, header.study_uid, header.series_uid, header.sop_uid,
        header.transfer_syntax,
        tuple(sorted((k, plain_value(v)) for k, v in header.attributes.items())),
        ref.md5, source_version=ref.version,
    )
    return instance, data if data is not None and len(data) == ref.size else None



def instance_identifier(study: str, series: str, sop: str) -> str:
    return f"{study}/{series}/{sop}"


def provenance(run: str, source: str) -> Provenance | None:
    """What an output of run ``run`` records about the input ``source`` it came from."""
    return Provenance(run, redact(source)) if run else None


def not_replaced(source: str, target: str, uids: tuple[str, ...], exc: ExistsWithOtherContent,
                 run: str) -> ErrorRecord:
    """The failure of the input ``source`` (whose ``(study, series, sop)`` UIDs are ``uids``) whose
    output ``target`` holds other bytes, naming the input that output came from when it is known
    (a conflicting duplicate, if it was this run)."""
    other = exc.written_from
    if other and run and other.run == run:
        sop_uid = uids[2] if len(uids) > 2 else "?"
        message = (f"conflicting duplicate: {source} and {other.source} both map to {target} "
                   f"(SOP Instance UID {sop_uid}) but their bytes differ; {other.source} was written "
                   "first and is kept")
    elif other:
        message = (f"{target} exists with different content, written from {other.source} by run "
                   f"{other.run} (use --overwrite to replace it)")
    else:
        message = f"{target} exists with different content (use --overwrite to replace it)"
    return ErrorRecord.create(source, message, Stage.WRITE, uids=uids)


def place_file(destination: Destination, relative: str, url: str, size: int, *, source: str,
               uids: tuple[str, ...] = (), run: str = "", **options: Any) -> str | ErrorRecord:
    """The one "place an instance" step of copy, write, export and the DIMSE receivers: put the
    file at ``url`` at ``relative`` with :meth:`Destination.place` (``options``: ``overwrite``,
    ``dry_run``, ``move``, ``data``...), recording that run ``run`` wrote it from ``source``.

    Returns the kind (``success`` or ``unchanged``), or the :class:`ErrorRecord` of ``source``: a
    conflict (naming the input the output came from, when known) or an I/O failure.
    """
    target = destination.url_of(relative)
    try:
        kind, _ = destination.place(relative, url, size, provenance=provenance(run, source), **options)
    except ExistsWithOtherContent as exc:
        return not_replaced(source, target, uids, exc, run)
    except IO_ERRORS as exc:
        return ErrorRecord.create(source, f"cannot write {target}: {error_text(exc)}", Stage.WRITE, uids=uids)
    return kind
