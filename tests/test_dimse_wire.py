"""The DIMSE exchange on an association's socket (io/dimse_exchange.py) against a peer that
misbehaves: the other end of a real socket pair, written by the test PDU by PDU. Each fault is
one clear WireError (the caller aborts the association and records the series), or an answer
that refuses the one sub-operation, never a file left behind or a hang."""

from __future__ import annotations

import socket
import struct
import threading
from pathlib import Path

import pytest

from dicom_transfer.dimse_wire import (
    A_ABORT,
    A_RELEASE_RQ,
    AFFECTED_SOP_CLASS,
    C_GET_RSP,
    COMMAND_FIELD,
    DATA_SET_TYPE,
    NO_DATA_SET,
    PDU_HEADER,
    RESPONDED_TO,
    STATUS,
    c_store_command,
    decode_command,
    encode_command,
    p_data_pdu,
    p_data_pdus,
    split_pdvs,
)
from dicom_transfer.io.dimse_exchange import (
    NOT_SUPPORTED,
    OUT_OF_RESOURCES,
    Arrival,
    QueryRequest,
    Wire,
    WireError,
    c_get,
)

GET_MODEL = "1.2.840.10008.5.1.4.1.2.2.3"  # Study Root Query/Retrieve Information Model - GET
MR = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT = "1.2.840.10008.1.2.1"
QUERY_CONTEXT, STORAGE_CONTEXT, OTHER_CONTEXT = 1, 3, 5
SOP = "1.2.3.4.5"
DATA_SET = b"\x08\x00\x16\x00UI\x1a\x00" + b"1.2.840.10008.5.1.4.1.1.4\x00"  # (0008,0016), explicit VR LE


def request(message_id: int = 7) -> QueryRequest:
    return QueryRequest(message_id, GET_MODEL, QUERY_CONTEXT, b"", {QUERY_CONTEXT: EXPLICIT, STORAGE_CONTEXT: EXPLICIT},
                        peer_max_pdu=0)


def get_response(responding_to: int, status: int) -> bytes:
    return encode_command({AFFECTED_SOP_CLASS: GET_MODEL.encode() + b"\0", COMMAND_FIELD: struct.pack("<H", C_GET_RSP),
                           RESPONDED_TO: struct.pack("<H", responding_to),
                           DATA_SET_TYPE: struct.pack("<H", NO_DATA_SET), STATUS: struct.pack("<H", status)})


def sub_operation(context_id: int, message_id: int = 100) -> bytes:
    """A C-STORE sub-operation request and its data set, as a PACS sends them during a C-GET."""
    return (p_data_pdus(context_id, True, c_store_command(message_id, MR, SOP), 0)
            + p_data_pdus(context_id, False, DATA_SET, 0))


class Peer:
    """The PACS end of a socket pair: sends what a test scripts, keeps what this side answers."""

    def __init__(self, script: list[bytes], close: bool = False) -> None:
        self.ours, self.theirs = socket.socketpair()
        self.ours.settimeout(5)
        self.script = script
        self.close = close
        self.received = bytearray()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.theirs.settimeout(5)
        if self.close:  # the request read first, so that the connection ends cleanly (no reset)
            self.received += self.theirs.recv(65536)
        for piece in self.script:
            self.theirs.sendall(piece)
        if self.close:
            self.theirs.shutdown(socket.SHUT_WR)
        try:
            while chunk := self.theirs.recv(65536):
                self.received += chunk
        except OSError:
            pass

    def answers(self) -> list[dict[int, bytes]]:
        """The command sets this side sent after its request (C-STORE responses), decoded."""
        self.ours.close()
        self.thread.join(5)
        commands, offset, data = [], 0, bytes(self.received)
        while offset < len(data):
            _, _, length = PDU_HEADER.unpack_from(data, offset)
            for _, header, fragment in split_pdvs(memoryview(data[offset + 6:offset + 6 + length])):
                if header & 0x01:
                    commands.append(decode_command(fragment))
            offset += 6 + length
        return commands[1:]  # the first is our C-GET request


def status_of(command: dict[int, bytes]) -> int:
    return struct.unpack("<H", command[STATUS])[0]


def test_a_sub_operation_is_written_as_received_and_answered_with_the_handler_s_status(tmp_path):
    received = []

    def on_store(arrival: Arrival) -> int:
        received.append((arrival.sop_instance, Path(arrival.dataset_path).read_bytes()))
        return 0xB000  # a warning, passed on as is

    peer = Peer([sub_operation(STORAGE_CONTEXT), p_data_pdu(QUERY_CONTEXT, 0x03, get_response(7, 0x0000))])
    final = c_get(Wire(peer.ours), request(), on_store, spool=str(tmp_path))
    assert status_of(decode_command(final)) == 0x0000
    assert received[0][0] == SOP and received[0][1].endswith(DATA_SET)  # the data set's bytes, behind a file meta
    assert [status_of(answer) for answer in peer.answers()] == [0xB000]


def test_a_sub_operation_on_a_context_not_negotiated_is_refused_and_the_retrieval_goes_on(tmp_path):
    calls = []

    def on_store(arrival: Arrival) -> int:  # the handler owns the file it is given
        calls.append(arrival.sop_instance)
        Path(arrival.dataset_path).unlink()
        return 0x0000

    peer = Peer([sub_operation(OTHER_CONTEXT), sub_operation(STORAGE_CONTEXT, 101),
                 p_data_pdu(QUERY_CONTEXT, 0x03, get_response(7, 0xB000))])
    c_get(Wire(peer.ours), request(), on_store, spool=str(tmp_path))
    assert [status_of(answer) for answer in peer.answers()] == [NOT_SUPPORTED, 0x0000]
    assert calls == [SOP] and list(tmp_path.iterdir()) == []  # nothing kept of the refused one


def test_a_sub_operation_that_cannot_be_kept_locally_is_refused(tmp_path):
    peer = Peer([sub_operation(STORAGE_CONTEXT), p_data_pdu(QUERY_CONTEXT, 0x03, get_response(7, 0xA702))])
    calls = []
    missing = tmp_path / "no-such-folder"
    c_get(Wire(peer.ours), request(), lambda arrival: calls.append(arrival) or 0x0000, spool=str(missing))
    assert calls == [] and [status_of(answer) for answer in peer.answers()] == [OUT_OF_RESOURCES]


@pytest.mark.parametrize(("script", "close", "why"), [
    ([PDU_HEADER.pack(A_ABORT, 0, 4) + b"\0\0\0\0"], False, "aborted the association"),
    ([PDU_HEADER.pack(A_RELEASE_RQ, 0, 4) + b"\0\0\0\0"], False, "release the association"),
    ([PDU_HEADER.pack(0x09, 0, 0)], False, "unexpected PDU"),
    ([PDU_HEADER.pack(0x04, 0, 100 << 20)], False, "PDU of 104857600 bytes"),
    ([p_data_pdu(QUERY_CONTEXT, 0x03, get_response(7, 0))[:20]], True, "closed the connection"),  # mid-PDU
    ([p_data_pdu(QUERY_CONTEXT, 0x03, b"\x00\x00\x00\x01\xff\xff\xff\x00")], False, "malformed"),
    ([PDU_HEADER.pack(0x04, 0, 6) + struct.pack(">LBB", 40, 1, 3)], False, "malformed"),
    ([p_data_pdu(QUERY_CONTEXT, 0x03, get_response(8, 0))], False, "answered another request"),
    ([p_data_pdu(QUERY_CONTEXT, 0x02, DATA_SET)], False, "data set fragment without its command"),
    ([p_data_pdu(STORAGE_CONTEXT, 0x03, c_store_command(5, MR, SOP)[:-4] + b"\x01\x00")], False, "malformed"),
])
def test_a_peer_that_misbehaves_is_one_clear_error_and_leaves_no_file(tmp_path, script, close, why):
    peer = Peer(script, close=close)
    with pytest.raises(WireError, match=why):
        c_get(Wire(peer.ours), request(), lambda arrival: 0x0000, spool=str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_a_peer_that_stops_answering_is_a_timeout_not_a_hang(tmp_path):
    peer = Peer([])
    peer.ours.settimeout(0.3)
    with pytest.raises(WireError, match="no answer within 0.3 s"):
        c_get(Wire(peer.ours), request(), lambda arrival: 0x0000, spool=str(tmp_path))
