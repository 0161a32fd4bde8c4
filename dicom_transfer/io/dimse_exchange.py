"""DIMSE requests and their answers on the association's socket, exchanged by this side:
the answers of a C-FIND collected, the C-STORE sub-operations of a C-GET written to Part-10
files as they arrive (each answered with its handler's status), the answer of a C-STORE read.

pynetdicom hands every message through its DUL thread (a PDU decoded into objects, the
command set decoded by pydicom, for a C-STORE a file meta written by pydicom) and encodes
each response with pydicom: several milliseconds of CPU per instance, shared with that
thread, where dcmtk's ``getscu`` spends a fraction of one. Here command sets are read and
written as bytes (:mod:`dicom_transfer.dimse_wire`) and each data set goes to its file as
it arrives, fragment by fragment, never decoded. The association stays pynetdicom's: it is
negotiated, released and aborted there; :class:`~dicom_transfer.io.dimse.Link` lends this
module its socket (a :class:`Wire`) while it is borrowed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import tempfile
from collections.abc import Callable, Iterator

from dicom_transfer.deid.encoding import file_meta_bytes
from dicom_transfer.dimse import status_category
from dicom_transfer.dimse_wire import (
    A_ABORT,
    A_RELEASE_RQ,
    AFFECTED_SOP_CLASS,
    AFFECTED_SOP_INSTANCE,
    C_FIND_RQ,
    C_FIND_RSP,
    C_GET_RQ,
    C_GET_RSP,
    C_STORE_RQ,
    C_STORE_RSP,
    COMMAND_FIELD,
    COMMAND_LAST,
    DATA,
    DATA_LAST,
    IS_COMMAND,
    IS_LAST,
    MESSAGE_ID,
    P_DATA_TF,
    PDU_HEADER,
    RESPONDED_TO,
    STATUS,
    MalformedMessage,
    c_store_command,
    c_store_response,
    command_uid,
    command_us,
    decode_command,
    has_data_set,
    p_data_pdu,
    p_data_pdus,
    query_command,
    split_pdvs,
)
from dicom_transfer.part10 import FileMeta

READ_SIZE = 256 << 10  # bytes asked of the socket at once: several small instances in one read
# This side announces 1 MB PDUs (io.dimse.MAX_PDU); a PDU that says it is longer than this is a
# corrupt stream, not something to hold in memory
LONGEST_PDU = 64 << 20
NOT_SUPPORTED = 0x0122  # SOP class not supported: a sub-operation on a context not negotiated
CANNOT_UNDERSTAND = 0xC000
OUT_OF_RESOURCES = 0xA700  # the received data set could not be kept


@dataclasses.dataclass(frozen=True)
class Arrival:
    """An instance a peer sent with C-STORE: the Part-10 file holding it (the data set's bytes
    as received, behind a file meta rebuilt from the request) and the UIDs the request named.
    The handler that takes it owns the file."""

    dataset_path: str
    sop_class: str
    sop_instance: str


StoreHandler = Callable[[Arrival], int]


class WireError(Exception):
    """The request cannot go on on this association (the caller aborts it): says why."""


@dataclasses.dataclass
class QueryRequest:
    """What one C-FIND or C-GET sends and how its answers are read."""

    message_id: int
    model: str
    context_id: int  # of the query/retrieve model
    identifier: bytes  # encoded in that context's transfer syntax
    syntaxes: dict[int, str]  # accepted context ID -> transfer syntax (storage contexts included)
    peer_max_pdu: int  # what the peer accepts per PDU (0: any length)


class Wire:
    """An association's socket: PDUs read off it in large pieces, bytes written to it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.start = 0

    def _need(self, count: int) -> None:
        while len(self.buffer) - self.start < count:
            if self.start:
                del self.buffer[:self.start]
                self.start = 0
            chunk = self.sock.recv(max(READ_SIZE, count - len(self.buffer)))
            if not chunk:
                raise WireError("the peer closed the connection")
            self.buffer += chunk

    def pdu(self) -> tuple[int, memoryview]:
        """The next PDU: its type and body."""
        self._need(6)
        kind, _, length = PDU_HEADER.unpack_from(self.buffer, self.start)
        if length > LONGEST_PDU:
            raise WireError(f"the peer sent a PDU of {length} bytes (this side accepts 1 MB)")
        self._need(6 + length)
        body = memoryview(bytes(self.buffer[self.start + 6:self.start + 6 + length]))
        self.start += 6 + length
        return kind, body

    @property
    def pending(self) -> int:
        """Bytes received and not read yet."""
        return len(self.buffer) - self.start

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)


class _Incoming:
    """The data set of one C-STORE sub-operation, written to its file as it arrives."""

    def __init__(self, command: dict[int, bytes], syntax: str, spool: str | None) -> None:
        self.command = command
        self.sop_class = command_uid(command, AFFECTED_SOP_CLASS)
        self.sop_instance = command_uid(command, AFFECTED_SOP_INSTANCE)
        handle, self.path = tempfile.mkstemp(prefix=".c-get-", suffix=".dcm", dir=spool)
        self.file = os.fdopen(handle, "wb")
        self.failed = False
        try:
            self.file.write(file_meta_bytes(self.sop_class, self.sop_instance, syntax))
        except BaseException:
            self.discard()
            raise

    def write(self, fragment: memoryview) -> None:
        """One more fragment; a local write failure is noted (the instance is refused once
        whole), not taken for the connection's."""
        if self.failed:
            return
        try:
            self.file.write(fragment)
        except OSError:
            self.failed = True
            self.discard()

    def close(self) -> bool:
        """Close the file; ``False`` (and no file left) if it could not be written whole."""
        if not self.failed:
            try:
                self.file.close()
                return True
            except OSError:
                pass
        self.discard()
        return False

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
            os.unlink(self.path)


def c_find(wire: Wire, request: QueryRequest) -> tuple[list[bytes], bytes]:
    """Send the C-FIND ``request`` on ``wire``; returns the identifiers its pending responses
    carried (each encoded in the request's transfer syntax) and the final response's command set.

    Raises
    ------
    WireError
        As :func:`c_get`.
    """
    session = _Session(wire, request, C_FIND_RSP, None, None)
    final = session.run(C_FIND_RQ)
    return session.identifiers, final


def c_get(wire: Wire, request: QueryRequest, on_store: StoreHandler, spool: str | None = None
          ) -> bytes:
    """Send the C-GET ``request`` on ``wire`` and serve its C-STORE sub-operations with
    ``on_store`` until the final response; returns that response's command set (encoded).
    Received files go to ``spool`` (default: the temporary folder).

    Raises
    ------
    WireError
        The peer aborted, released or closed the association, sent something unreadable, or
        nothing within the socket's timeout.
    """
    session = _Session(wire, request, C_GET_RSP, on_store, spool)
    return session.run(C_GET_RQ)


class _Session:
    """One request and its answers, and the state of the exchange between PDUs."""

    def __init__(self, wire: Wire, request: QueryRequest, response_field: int,
                 on_store: StoreHandler | None, spool: str | None) -> None:
        self.wire = wire
        self.request = request
        self.response_field = response_field
        self.on_store = on_store
        self.spool = spool
        self.command = bytearray()  # fragments of the command set being received
        self.incoming: _Incoming | None = None  # a C-STORE's data set being received
        self.data: bytearray | None = None  # a response's data set being received
        self.pending = False  # that response is a pending one (its identifier is kept)
        self.skipping = False  # the data set of a sub-operation answered already
        self.identifiers: list[bytes] = []
        self.final: bytes | None = None  # the final response's command set

    def run(self, request_field: int) -> bytes:
        request = self.request
        try:
            with _wire_errors(self.wire):
                self.wire.send(
                    p_data_pdus(request.context_id, True,
                                query_command(request_field, request.message_id, request.model), request.peer_max_pdu)
                    + p_data_pdus(request.context_id, False, request.identifier, request.peer_max_pdu))
                while self.final is None or self.data is not None:
                    self.read_pdu()
                return self.final
        finally:
            if self.incoming is not None:
                self.incoming.discard()

    def read_pdu(self) -> None:
        for context_id, header, fragment in split_pdvs(_p_data(self.wire)):
            if header & IS_COMMAND:
                self.command += fragment
                if header & IS_LAST:
                    raw, self.command = bytes(self.command), bytearray()
                    self._on_command(context_id, raw)
            else:
                self._on_data(context_id, header, fragment)

    def _on_data(self, context_id: int, header: int, fragment: memoryview) -> None:
        if self.incoming is not None and self.on_store is not None:
            self.incoming.write(fragment)
            if header & IS_LAST:
                arrived, self.incoming = self.incoming, None
                _deliver(self.wire, self.request, context_id, arrived, self.on_store)
        elif self.data is not None:
            self.data += fragment
            if header & IS_LAST:
                if self.pending:
                    self.identifiers.append(bytes(self.data))
                self.data = None
        elif self.skipping:
            self.skipping = not header & IS_LAST
        else:
            raise WireError("the peer sent a data set fragment without its command")

    def _on_command(self, context_id: int, raw: bytes) -> None:
        message = decode_command(raw)
        field = command_us(message, COMMAND_FIELD)
        if field == C_STORE_RQ and self.on_store is not None:
            self.incoming = _start_store(self.wire, self.request, context_id, message, self.spool)
            self.skipping = self.incoming is None and has_data_set(message)
        elif field == self.response_field:
            if command_us(message, RESPONDED_TO) != self.request.message_id:
                raise WireError("the peer answered another request")
            status = command_us(message, STATUS)
            if status is None:
                raise WireError("a response without a status")
            self.pending = status_category(status) == "pending"
            if not self.pending:
                self.final = raw
            self.data = bytearray() if has_data_set(message) else None
        else:
            raise WireError(f"the peer sent an unexpected DIMSE message (0x{field or 0:04X})")


def c_store(wire: Wire, context_id: int, message_id: int, meta: FileMeta, path: str, peer_max_pdu: int) -> int:
    """C-STORE the data set of the Part-10 file at ``path`` as it is (from ``meta.dataset_offset``)
    on presentation context ``context_id``; the status of the answer. The command set and the
    data set's first fragment go in one write.

    Raises
    ------
    OSError
        The file cannot be opened or read (nothing was sent).
    WireError
        As :func:`c_get` (the association cannot be used any more).
    """
    fragment = peer_max_pdu - 6 if peer_max_pdu > 6 else 1 << 30
    with open(path, "rb") as data:
        data.seek(meta.dataset_offset)
        chunk = data.read(fragment)
        pdus = [p_data_pdu(context_id, COMMAND_LAST, c_store_command(message_id, meta.sop_class, meta.sop_instance))]
        with _wire_errors(wire):
            while True:
                following = data.read(fragment) if len(chunk) == fragment else b""
                pdus.append(p_data_pdu(context_id, DATA if following else DATA_LAST, chunk))
                wire.send(b"".join(pdus))
                if not following:
                    break
                chunk, pdus = following, []
    command = bytearray()
    with _wire_errors(wire):
        while True:
            for _, header, piece in split_pdvs(_p_data(wire)):
                if not header & IS_COMMAND:
                    raise WireError("the peer sent a data set where a C-STORE response was expected")
                command += piece
                if header & IS_LAST:
                    return _store_status(decode_command(command), message_id)


def _store_status(message: dict[int, bytes], message_id: int) -> int:
    status = command_us(message, STATUS)
    if command_us(message, COMMAND_FIELD) != C_STORE_RSP or command_us(message, RESPONDED_TO) != message_id \
            or status is None:
        raise WireError(f"the peer answered C-STORE request {message_id} with something else")
    return status


def _p_data(wire: Wire) -> memoryview:
    """The body of the next PDU, a P-DATA-TF one.

    Raises
    ------
    WireError
        The peer aborted or released the association, or sent another kind of PDU.
    """
    kind, body = wire.pdu()
    if kind == A_ABORT:
        raise WireError("the peer aborted the association")
    if kind == A_RELEASE_RQ:
        raise WireError("the peer asked to release the association before its answer")
    if kind != P_DATA_TF:
        raise WireError(f"the peer sent an unexpected PDU (type 0x{kind:02X})")
    return body


@contextlib.contextmanager
def _wire_errors(wire: Wire) -> Iterator[None]:
    """What goes wrong on the wire, as a :class:`WireError` saying what."""
    try:
        yield
    except MalformedMessage as exc:
        raise WireError(f"the peer sent a malformed message: {exc}") from None
    except TimeoutError:
        raise WireError(f"no answer within {wire.sock.gettimeout()} s") from None
    except OSError as exc:
        raise WireError(f"the connection failed: {exc}") from None


def _start_store(wire: Wire, request: QueryRequest, context_id: int, command: dict[int, bytes],
                 spool: str | None) -> _Incoming | None:
    """A C-STORE request: the file its data set goes to, or ``None`` when it is answered
    already (no data set, a context that was not negotiated, no room for the file)."""
    syntax = request.syntaxes.get(context_id)
    if not has_data_set(command):
        _answer(wire, request, context_id, command, CANNOT_UNDERSTAND)
    elif syntax is None:
        _answer(wire, request, context_id, command, NOT_SUPPORTED)
    else:
        try:
            return _Incoming(command, syntax, spool)
        except OSError:
            _answer(wire, request, context_id, command, OUT_OF_RESOURCES)
    return None


def _deliver(wire: Wire, request: QueryRequest, context_id: int, arrived: _Incoming,
             on_store: StoreHandler) -> None:
    """Close the received file, hand it to ``on_store`` and answer with its status."""
    if not arrived.close():
        _answer(wire, request, context_id, arrived.command, OUT_OF_RESOURCES)
        return
    try:
        status = on_store(Arrival(arrived.path, arrived.sop_class, arrived.sop_instance))
    except BaseException:
        arrived.discard()
        raise
    _answer(wire, request, context_id, arrived.command, status)


def _answer(wire: Wire, request: QueryRequest, context_id: int, command: dict[int, bytes],
            status: int) -> None:
    responding_to = command_us(command, MESSAGE_ID) or 0
    response = c_store_response(responding_to, command_uid(command, AFFECTED_SOP_CLASS),
                                command_uid(command, AFFECTED_SOP_INSTANCE), status)
    wire.send(p_data_pdus(context_id, True, response, request.peer_max_pdu))
