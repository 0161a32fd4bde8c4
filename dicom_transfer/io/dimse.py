"""A DIMSE client (pynetdicom): pooled associations, C-ECHO, C-FIND, C-GET, C-MOVE and C-STORE.

Associations to one peer are shared by the DoFns of a worker process through an
:class:`~dicom_transfer.io.dimse_pool.AssociationPool`. Every socket gets ``TCP_NODELAY``:
DIMSE sends a command and its data set as separate small writes, which Nagle's algorithm
would hold for a delayed ACK.

pynetdicom negotiates, releases and aborts associations. While one is borrowed, the
requests that come once per instance or per series (C-STORE, C-FIND, C-GET) are
exchanged by this side on its socket (:mod:`dicom_transfer.io.dimse_exchange`),
pynetdicom's threads looking away: its per-message pydicom work and thread hand-offs
cost milliseconds per instance. C-ECHO, C-MOVE, and every service with ``-v``
(pynetdicom's logger at debug level) go through pynetdicom.

Data sets are sent and received as the bytes on the wire, never decoded: a file's data
set is sent from disk (it needs an accepted context of the file's own transfer syntax:
nothing is transcoded), and what arrives is written to a Part-10 file as it comes
(pynetdicom's ``STORE_SEND_CHUNKED_DATASET`` and ``STORE_RECV_CHUNKED_DATASET`` where
it does the work).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import socket
import threading
import time
from collections.abc import Iterable, Iterator

from pydicom.dataset import Dataset

from dicom_transfer.dimse import PeerAddress, status_category, status_text
from dicom_transfer.io.dimse_exchange import (
    Arrival,
    QueryRequest,
    StoreHandler,
    Wire,
    WireError,
    c_find,
    c_get,
    c_store,
)
from dicom_transfer.part10 import FileMeta

try:
    from pynetdicom import AE, _config, build_role, evt
    from pynetdicom.dsutils import decode, encode
    HAVE_PYNETDICOM = True
except ImportError:  # pragma: no cover - the [dimse] extra is not installed
    HAVE_PYNETDICOM = False

LOG = logging.getLogger(__name__)
FIND_MODEL = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Query/Retrieve Information Model
GET_MODEL = "1.2.840.10008.5.1.4.1.2.2.3"
MOVE_MODEL = "1.2.840.10008.5.1.4.1.2.2.2"
VERIFICATION = "1.2.840.10008.1.1"
EXPLICIT_AND_IMPLICIT = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")  # the query/retrieve models' syntaxes
# What a retrieval proposes per storage SOP class when the PACS's stored syntax is unknown: one
# context per syntax, so that the PACS can send each instance as stored. Explicit VR first.
RETRIEVE_SYNTAXES = (
    "1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.102", "1.2.840.10008.1.2.4.107",
)
COMMON_STORAGE_CLASSES = (  # when C-FIND does not report SOP Class UIDs (dcmqrscp): 40 x 3 syntaxes
    "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.1",
    "1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1.2",
    "1.2.840.10008.5.1.4.1.1.1.2.1", "1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.3.1",
    "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.7.2", "1.2.840.10008.5.1.4.1.1.7.3",
    "1.2.840.10008.5.1.4.1.1.7.4", "1.2.840.10008.5.1.4.1.1.12.1", "1.2.840.10008.5.1.4.1.1.12.2",
    "1.2.840.10008.5.1.4.1.1.20", "1.2.840.10008.5.1.4.1.1.128", "1.2.840.10008.5.1.4.1.1.2.1",
    "1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.130", "1.2.840.10008.5.1.4.1.1.481.1",
    "1.2.840.10008.5.1.4.1.1.481.2", "1.2.840.10008.5.1.4.1.1.481.3", "1.2.840.10008.5.1.4.1.1.481.5",
    "1.2.840.10008.5.1.4.1.1.481.8", "1.2.840.10008.5.1.4.1.1.88.11", "1.2.840.10008.5.1.4.1.1.88.22",
    "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.88.59", "1.2.840.10008.5.1.4.1.1.11.1",
    "1.2.840.10008.5.1.4.1.1.104.1", "1.2.840.10008.5.1.4.1.1.77.1.4", "1.2.840.10008.5.1.4.1.1.66.4",
    "1.2.840.10008.5.1.4.1.1.66", "1.2.840.10008.5.1.4.1.1.13.1.3", "1.2.840.10008.5.1.4.1.1.13.1.1",
    "1.2.840.10008.5.1.4.1.1.77.1.5.1", "1.2.840.10008.5.1.4.1.1.77.1.1.1", "1.2.840.10008.5.1.4.1.1.66.1",
    "1.2.840.10008.5.1.4.1.1.30",
)
COMMON_SYNTAXES = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.4.50")
BUSY_POLL = 0.0002  # seconds between the DUL's polls of a borrowed association (pynetdicom: 0.001)
IDLE_POLL = 0.005  # idle in the pool: it only has to notice a release, an abort or the timeout
MAX_PDU = 1 << 20  # what this side accepts per PDU (fewer, larger PDUs for large instances)


class DimseError(Exception):
    """A DIMSE operation failed: the message says with whom and why."""


class NoContext(DimseError):
    """The peer accepted no presentation context for this data set's SOP class and transfer syntax."""


class AssociationFailed(DimseError):
    """No association: the peer is unreachable, refused it, or accepted none of the contexts."""


def require_pynetdicom() -> None:
    """Raises ``DimseError`` if pynetdicom (the ``[dimse]`` extra) is missing."""
    if not HAVE_PYNETDICOM:
        raise DimseError("DIMSE needs pynetdicom: pip install 'dicom-transfer[dimse]'")


@dataclasses.dataclass(frozen=True)
class DimseSettings:
    """How to reach one peer; picklable, so a DoFn carries it to the workers."""

    peer: PeerAddress
    calling_ae: str = "DICOM-TRANSFER"
    timeout: float = 60.0  # connection, ACSE, DIMSE and network timeouts
    max_associations: int = 4

    @property
    def where(self) -> str:
        return f"{self.peer} (calling AE {self.calling_ae})"


def _set_nodelay(event) -> None:
    with contextlib.suppress(AttributeError, OSError):
        event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _quiet_pynetdicom() -> None:
    """pynetdicom logs every refused or aborted association as an error; this module says
    what went wrong itself, once. ``-v`` (a debug level set on it) keeps pynetdicom's lines."""
    logger = logging.getLogger("pynetdicom")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.CRITICAL)


def use_raw_datasets() -> None:
    """Send and receive data sets as raw bytes (process-wide pynetdicom settings), without
    pynetdicom's standard event handlers, which format a description of every PDU and DIMSE
    message whether or not it is logged (kept when its logger is at debug level: ``-v``)."""
    _config.STORE_SEND_CHUNKED_DATASET = True
    _config.STORE_RECV_CHUNKED_DATASET = True
    _config.LOG_RESPONSE_IDENTIFIERS = False
    _config.LOG_REQUEST_IDENTIFIERS = False
    debug = logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG)
    _config.LOG_HANDLER_LEVEL = "standard" if debug else "none"


class _Checkpoint(threading.Event):
    """Where pynetdicom's association reactor pauses. Every ``send_c_*()`` clears it, waits until
    the reactor (which polls every millisecond) has paused, and sets it once answered; the
    reactor only looks for requests from the peer, which a requestor does not serve outside of
    a C-GET (served by ``send_c_get`` itself). While an association is borrowed the reactor stays
    paused (``set()`` is deferred), so consecutive requests do not wait up to 1 ms each for it;
    a peer's abort still ends a wait at once (pynetdicom's state machine answers it)."""

    def __init__(self) -> None:
        super().__init__()
        # Its own condition and flag (an Event's are private): every method of Event is redefined here
        self._state = threading.Condition(threading.Lock())
        self._raised = True
        self.held = False
        self.blocked = False  # the reactor waits here, and will until set()

    def is_set(self) -> bool:
        return self._raised

    def set(self) -> None:
        if not self.held:
            with self._state:
                self._raised = True
                self._state.notify_all()

    def clear(self) -> None:
        with self._state:
            self._raised = False

    def wait(self, timeout: float | None = None) -> bool:
        # Event.wait, noting when the reactor is really stopped: pynetdicom's own ``_is_paused``
        # is already True while the reactor is still passing a checkpoint that was set
        with self._state:
            if self._raised:
                return True
            self.blocked = True
            try:
                return self._state.wait_for(lambda: self._raised, timeout)
            finally:
                self.blocked = False


class Link:
    """One open association and what it was negotiated for.

    ``on_store`` receives the C-STORE sub-operations of a C-GET (set by the
    borrower for the element at hand); it returns the status to answer.
    """

    def __init__(self, settings: DimseSettings, contexts: list[tuple[str, tuple[str, ...]]],
                 scp_roles: Iterable[str] = ()) -> None:
        require_pynetdicom()
        use_raw_datasets()
        self.settings = settings
        self.proposed = {(abstract, syntax) for abstract, syntaxes in contexts for syntax in syntaxes}
        self.scp_roles = set(scp_roles)
        self.on_store: StoreHandler | None = None
        self.rejection: str | None = None
        self.connected = False
        _quiet_pynetdicom()
        ae = AE(ae_title=settings.calling_ae)
        for attribute in ("acse_timeout", "dimse_timeout", "network_timeout", "connection_timeout"):
            setattr(ae, attribute, settings.timeout)
        ae.maximum_pdu_size = MAX_PDU
        for abstract, syntaxes in contexts:
            ae.add_requested_context(abstract, list(syntaxes))
        handlers: list[evt.EventHandlerType] = [
            (evt.EVT_CONN_OPEN, self._connection_open), (evt.EVT_ACSE_RECV, self._note_rejection),
            (evt.EVT_C_STORE, self._store)]
        peer = settings.peer
        self.association = ae.associate(
            peer.host, peer.port, ae_title=peer.ae_title, max_pdu=MAX_PDU,
            ext_neg=[build_role(uid, scp_role=True) for uid in sorted(self.scp_roles)] or None,
            evt_handlers=handlers)
        if not self.association.is_established:
            raise AssociationFailed(self._why_not())
        self.accepted = {(cx.abstract_syntax, cx.transfer_syntax[0])
                         for cx in self.association.accepted_contexts}
        self.context_ids: dict[tuple[str, str], int | None] = {
            (str(cx.abstract_syntax), str(cx.transfer_syntax[0])): cx.context_id
            for cx in self.association.accepted_contexts if cx.as_scu}
        self.message_id = 0
        self.wire: Wire | None = None  # the socket, while this side reads it (see _lend)
        self.checkpoint = _Checkpoint()
        self.association._reactor_checkpoint = self.checkpoint

    def engage(self) -> None:
        """Borrowed: the reactor paused (see :class:`_Checkpoint`), the DUL polling faster."""
        association = self.association
        self.checkpoint.held = True
        self.checkpoint.clear()
        deadline = time.monotonic() + 1.0  # the reactor stops within ~1 ms, unless it has ended
        while not self.checkpoint.blocked and association.is_alive() and time.monotonic() < deadline:
            time.sleep(0.0001)
        association.dul._run_loop_delay = BUSY_POLL

    def disengage(self) -> None:
        """Idle in the pool: the reactor running (it notices a release or abort by the peer and
        the network timeout), the DUL polling at pynetdicom's pace."""
        self._unlend()
        self.association.dul._run_loop_delay = IDLE_POLL
        self.checkpoint.held = False
        self.checkpoint.set()

    def _connection_open(self, event) -> None:
        self.connected = True
        _set_nodelay(event)

    def _note_rejection(self, event) -> None:
        primitive = event.primitive
        if getattr(primitive, "result", None) in (1, 2):
            self.rejection = (f"{primitive.result_str}: {primitive.reason_str} "
                              f"(source: {primitive.source_str})")

    def _why_not(self) -> str:
        where = self.settings.where
        if not self.connected:
            return f"cannot connect to {where}: no answer or connection refused"
        if self.rejection:
            return f"{where} rejected the association ({self.rejection})"
        if self.association.is_rejected:
            return f"{where} rejected the association"
        if self.association.is_aborted:
            return (f"{where} aborted the association (it accepted none of the proposed "
                    "presentation contexts, or refused this calling AE title)")
        return f"{where} closed the connection without accepting the association"

    def _arrived(self, arrival: Arrival) -> int:
        """A C-STORE sub-operation of a C-GET: ``on_store``'s status."""
        if self.on_store is None:
            return 0xA801  # not expecting instances on this association
        return self.on_store(arrival)

    def _store(self, event) -> int:
        """A C-STORE sub-operation received by pynetdicom (C-GET with ``-v``: see :meth:`retrieve`)."""
        return self._arrived(arrival_of(event))

    def covers(self, contexts: Iterable[tuple[str, str]], scp_roles: Iterable[str] = ()) -> bool:
        """True if this association was negotiated for all of ``contexts`` and roles."""
        return self.alive and set(contexts) <= self.proposed and set(scp_roles) <= self.scp_roles

    @property
    def alive(self) -> bool:
        return self.association.is_established

    def close(self) -> None:
        with contextlib.suppress(Exception):  # best effort: the peer may be gone already
            self.disengage()
            if self.association.is_established:
                self.association.release()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.disengage()
            self.association.abort()

    # -- services ------------------------------------------------------------------------------

    def echo(self) -> None:
        self._unlend()
        status = self.association.send_c_echo()
        self._check_final(status, "C-ECHO")

    def find(self, query: Dataset) -> Iterator[Dataset]:
        """The identifiers that a Study Root C-FIND matches.

        Raises
        ------
        DimseError
            A failure status, or the association broke.
        """
        if not logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG):
            yield from self._c_find(query)
            return
        self._unlend()
        for status, identifier in self.association.send_c_find(query, FIND_MODEL):
            code = self._status_code(status, "C-FIND")
            if status_category(code) == "pending":
                if identifier is not None:
                    yield identifier
                continue
            self._raise_unless_done(code, "C-FIND")

    def retrieve(self, query: Dataset, move_destination: str | None = None, spool: str | None = None) -> Dataset:
        """C-GET (``move_destination`` None) or C-MOVE; returns the final response status.
        A C-GET's instances are written to files in ``spool`` (default: the temporary folder).

        Raises
        ------
        DimseError
            The association broke or timed out (no final response).
        """
        if move_destination is None and not logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG):
            return self._c_get(query, spool)
        self._unlend()
        if move_destination is None:
            responses = self.association.send_c_get(query, GET_MODEL)
        else:
            responses = self.association.send_c_move(query, move_destination, MOVE_MODEL)
        final = None
        for status, _identifier in responses:
            code = self._status_code(status, "C-MOVE" if move_destination else "C-GET")
            if status_category(code) != "pending":
                final = status
        if final is None:
            raise DimseError(f"{self.settings.where}: no final retrieve response")
        return final

    def _c_find(self, query: Dataset) -> Iterator[Dataset]:
        """C-FIND with this side reading the association's socket
        (:mod:`dicom_transfer.io.dimse_exchange`). Raises DimseError."""
        request, implicit = self._request(FIND_MODEL, query, "C-FIND")
        try:
            identifiers, final = c_find(self._lend(), request)
        except WireError as exc:
            self.abort()
            raise DimseError(f"C-FIND to {self.settings.where}: {exc}") from None
        self._after(final, "C-FIND")
        for identifier in identifiers:
            yield decode(io.BytesIO(identifier), implicit, True)

    def _c_get(self, query: Dataset, spool: str | None) -> Dataset:
        """C-GET with this side reading the association's socket
        (:mod:`dicom_transfer.io.dimse_exchange`): the sub-operations go to ``on_store``.
        Raises DimseError."""
        request, _ = self._request(GET_MODEL, query, "C-GET")
        try:
            final = c_get(self._lend(), request, self._arrived, spool)
        except WireError as exc:
            self.abort()
            raise DimseError(f"C-GET from {self.settings.where}: {exc}") from None
        return self._after(final, "C-GET")

    def _request(self, model: str, query: Dataset, operation: str) -> tuple[QueryRequest, bool]:
        """A C-FIND or C-GET request of ``query`` on this association, and whether its
        identifiers are implicit VR."""
        syntax = next((s for s in EXPLICIT_AND_IMPLICIT if (model, s) in self.context_ids), None)
        if syntax is None:
            raise NoContext(f"{self.settings.where} accepted no presentation context for {operation}")
        implicit = syntax == "1.2.840.10008.1.2"
        self.message_id = self.message_id % 0xFFFF + 1
        return QueryRequest(
            self.message_id, model, self.context_ids[(model, syntax)] or 0, encode(query, implicit, True) or b"",
            {cx.context_id: str(cx.transfer_syntax[0]) for cx in self.association.accepted_contexts
             if cx.context_id is not None},
            self.association.acceptor.maximum_length or 0), implicit

    def _after(self, final: bytes, operation: str) -> Dataset:
        """The final response's status. Raises DimseError for a failure status of a C-FIND."""
        self._check_clean(operation)
        status = decode(io.BytesIO(final), True, True)
        if operation == "C-FIND":
            self._check_final(status, operation)
        return status

    def _lend(self) -> Wire:
        """The association's socket, for this thread alone to read until :meth:`_unlend`
        (``disengage()``): pynetdicom's DUL thread, which otherwise reads every PDU, looks away
        (its check for incoming data answers "none"; the handshake makes sure it is not inside
        a read) and polls slowly, since it has nothing to do. Raises DimseError."""
        if self.wire is not None:
            return self.wire
        association = self.association
        dul = association.dul
        sock = dul.socket.socket if dul.socket is not None else None
        if sock is None or not association.is_established:
            raise DimseError(f"the association with {self.settings.where} has no connection")
        looked_away = threading.Event()

        def no_transport_event() -> bool:
            looked_away.set()
            return False

        vars(dul)["_is_transport_event"] = no_transport_event  # shadows the DUL's method on this instance only
        while not looked_away.wait(0.01):
            if not dul.is_alive():
                del dul._is_transport_event
                raise DimseError(f"the association with {self.settings.where} has ended")
        dul._run_loop_delay = IDLE_POLL
        sock.settimeout(self.settings.timeout)
        self.wire = Wire(sock)
        return self.wire

    def _unlend(self) -> None:
        """The DUL thread reads the socket again (pynetdicom's own services, a release, an abort)."""
        if self.wire is None:
            return
        dul = self.association.dul
        with contextlib.suppress(OSError):
            self.wire.sock.settimeout(None)
        self.wire = None
        with contextlib.suppress(AttributeError):
            del dul._is_transport_event
        dul._run_loop_delay = BUSY_POLL
        dul._idle_timer.restart()  # the idle time ran while this side read

    def store(self, path: str, meta: FileMeta | None = None) -> int:
        """C-STORE the Part-10 file at ``path`` (its data set bytes as they are); the status code.
        With its ``meta`` (read by the caller), the request is framed here (:meth:`_send_store`);
        without, by pynetdicom's ``send_c_store``.

        Raises
        ------
        DimseError
            No accepted context for its SOP class and transfer syntax, or the association broke.
        """
        if meta is not None and not logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG):
            return self._send_store(path, meta)
        try:
            status = self.association.send_c_store(path)
        except ValueError as exc:  # no presentation context for it
            raise NoContext(f"{self.settings.where} accepted no presentation context for it (nothing is "
                            f"transcoded): {exc}") from None
        return self._status_code(status, "C-STORE")

    def _send_store(self, path: str, meta: FileMeta) -> int:
        """C-STORE without pynetdicom's per-message pydicom work (about 1 ms of CPU per instance,
        most of a small instance's cost): sent and answered on the lent socket
        (:func:`~dicom_transfer.io.dimse_exchange.c_store`), with command sets of
        :mod:`dicom_transfer.dimse_wire` (the bytes pynetdicom would send)."""
        context_id = self.context_ids.get((meta.sop_class, meta.transfer_syntax))
        if context_id is None:
            raise NoContext(f"{self.settings.where} accepted no presentation context for it (nothing is "
                            f"transcoded): SOP class {meta.sop_class}, transfer syntax {meta.transfer_syntax}")
        self.message_id = self.message_id % 0xFFFF + 1
        try:
            status = c_store(self._lend(), context_id, self.message_id, meta, path,
                             self.association.acceptor.maximum_length or 0)
        except WireError as exc:
            self.abort()
            raise DimseError(f"C-STORE to {self.settings.where}: {exc}") from None
        self._check_clean("C-STORE")
        return status

    def _check_clean(self, operation: str) -> None:
        """An association on which the peer sent more than the answer is not reused (what
        follows would be taken for the next answer)."""
        if self.wire is not None and self.wire.pending:
            LOG.warning("%s sent %d bytes after its %s response; aborting the association",
                        self.settings.where, self.wire.pending, operation)
            self.abort()

    def _status_code(self, status: Dataset, operation: str) -> int:
        if status is None or "Status" not in status:
            self.abort()
            raise DimseError(f"{operation}: no answer from {self.settings.where} (timeout, or the "
                             "association was aborted)")
        return int(status.Status)

    def _check_final(self, status: Dataset, operation: str) -> None:
        self._raise_unless_done(self._status_code(status, operation), operation)

    def _raise_unless_done(self, code: int, operation: str) -> None:
        if status_category(code) not in ("success", "warning"):
            raise DimseError(f"{operation} to {self.settings.where} failed: {status_text(code)}")


def echo(settings: DimseSettings) -> None:
    """C-ECHO the peer once.

    Raises
    ------
    DimseError
        Unreachable, association rejected (wrong AE title...), or a failure status.
    """
    require_pynetdicom()
    link = Link(settings, [(VERIFICATION, ("1.2.840.10008.1.2",))])
    try:
        link.echo()
    finally:
        link.close()


def query(level: str, **keys: str) -> Dataset:
    """A Study Root query identifier at ``level`` with the given keys (``""`` = return it)."""
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    return identifier


def final_counts(status: Dataset) -> dict[str, int]:
    """The sub-operation counts of a final C-GET/C-MOVE response (those it carries)."""
    counts = {}
    for keyword, name in (("NumberOfCompletedSuboperations", "completed"),
                          ("NumberOfFailedSuboperations", "failed"),
                          ("NumberOfWarningSuboperations", "warning")):
        value = status.get(keyword)
        if value is not None:
            counts[name] = int(value)
    return counts



def start_storage_scp(ae_title: str, host: str, port: int, on_store: StoreHandler, max_associations: int = 16):
    """A storage SCP (every storage SOP class, every transfer syntax, so that nothing needs
    transcoding) on ``host:port``, answering each C-STORE with ``on_store(arrival)``'s status
    (an :class:`~dicom_transfer.io.dimse_exchange.Arrival`). Returns the server: ``shutdown()`` stops it."""
    require_pynetdicom()
    use_raw_datasets()
    from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts

    ae = AE(ae_title=ae_title)
    ae.maximum_associations = max_associations
    ae.maximum_pdu_size = MAX_PDU
    ae.network_timeout = ae.dimse_timeout = ae.acse_timeout = 120
    # pynetdicom accepts the first of these that a proposed context lists: explicit VR before
    # implicit, so that a peer offering both in one context sends explicit VR data as it is.
    syntaxes = [*RETRIEVE_SYNTAXES, *(s for s in ALL_TRANSFER_SYNTAXES if s not in RETRIEVE_SYNTAXES)]
    for context in AllStoragePresentationContexts:
        if context.abstract_syntax is not None:  # always set in pynetdicom's list; typed optional
            ae.add_supported_context(context.abstract_syntax, syntaxes)
    ae.add_supported_context(VERIFICATION, ALL_TRANSFER_SYNTAXES[:2])
    return ae.start_server((host, port), block=False, evt_handlers=[
        (evt.EVT_CONN_OPEN, _set_nodelay), (evt.EVT_C_STORE, lambda event: on_store(arrival_of(event)))])


def arrival_of(event) -> Arrival:
    """A C-STORE received by pynetdicom (``STORE_RECV_CHUNKED_DATASET``) as an :class:`Arrival`."""
    request = event.request
    return Arrival(str(event.dataset_path), str(getattr(request, "AffectedSOPClassUID", "") or ""),
                   str(getattr(request, "AffectedSOPInstanceUID", "") or ""))
