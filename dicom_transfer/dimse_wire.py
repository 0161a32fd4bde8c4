"""DIMSE messages on the wire as plain logic: command sets (PS3.7 §6.3, §9.3, always implicit VR
little endian) and P-DATA-TF PDUs (PS3.8 §9.3.5), encoded and decoded without pydicom.

The product frames what it sends and reads what it receives for the messages that come
once per instance (C-STORE requests and responses, the pending responses of a C-GET):
pynetdicom's pydicom-based encoding costs about a millisecond of CPU per message, most
of a small instance's cost. Each encoder here makes the bytes pynetdicom makes (tests
compare them). No networking here; see ``io.dimse`` and ``io.c_get``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

C_STORE_RQ, C_STORE_RSP = 0x0001, 0x8001
C_GET_RQ, C_GET_RSP = 0x0010, 0x8010
C_FIND_RQ, C_FIND_RSP = 0x0020, 0x8020
NO_DATA_SET = 0x0101  # (0000,0800) Command Data Set Type: no data set follows
PRIORITY_LOW = 0x0002  # pynetdicom's default for send_c_store and send_c_get

# Command elements (group 0000), by element number
AFFECTED_SOP_CLASS = 0x0002
COMMAND_FIELD = 0x0100
MESSAGE_ID = 0x0110
RESPONDED_TO = 0x0120
PRIORITY = 0x0700
DATA_SET_TYPE = 0x0800
STATUS = 0x0900
AFFECTED_SOP_INSTANCE = 0x1000

P_DATA_TF, A_RELEASE_RQ, A_ABORT = 0x04, 0x05, 0x07
COMMAND_LAST, DATA, DATA_LAST = 0x03, 0x00, 0x02  # message control headers of a PDV
IS_COMMAND, IS_LAST = 0x01, 0x02  # bits of a message control header

_ELEMENT = struct.Struct("<HHL")
_US = struct.Struct("<H")
PDU_HEADER = struct.Struct(">BBL")
PDV_HEADER = struct.Struct(">LBB")


class MalformedMessage(ValueError):
    """A PDU or command set that cannot be read: says what is wrong."""


def _uid(text: str) -> bytes:
    raw = text.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def encode_command(elements: dict[int, bytes]) -> bytes:
    """A command set of the given ``{element number: encoded value}``, in element order,
    with its group length."""
    body = b"".join(_ELEMENT.pack(0x0000, number, len(value)) + value for number, value in sorted(elements.items()))
    return _ELEMENT.pack(0x0000, 0x0000, 4) + struct.pack("<L", len(body)) + body


def c_store_command(message_id: int, sop_class: str, sop_instance: str, priority: int = PRIORITY_LOW) -> bytes:
    """The command set of a C-STORE request with a data set, ready to send as a PDV."""
    return encode_command({
        AFFECTED_SOP_CLASS: _uid(sop_class), COMMAND_FIELD: _US.pack(C_STORE_RQ), MESSAGE_ID: _US.pack(message_id),
        PRIORITY: _US.pack(priority), DATA_SET_TYPE: _US.pack(0x0001), AFFECTED_SOP_INSTANCE: _uid(sop_instance)})


def c_store_response(responding_to: int, sop_class: str, sop_instance: str, status: int) -> bytes:
    """The command set of a C-STORE response (no data set) to request ``responding_to``."""
    return encode_command({
        AFFECTED_SOP_CLASS: _uid(sop_class), COMMAND_FIELD: _US.pack(C_STORE_RSP),
        RESPONDED_TO: _US.pack(responding_to), DATA_SET_TYPE: _US.pack(NO_DATA_SET), STATUS: _US.pack(status),
        AFFECTED_SOP_INSTANCE: _uid(sop_instance)})


def query_command(field: int, message_id: int, model: str, priority: int = PRIORITY_LOW) -> bytes:
    """The command set of a C-FIND or C-GET request (``field`` ``C_FIND_RQ`` or ``C_GET_RQ``) in
    the query/retrieve ``model``; its identifier follows as the data set."""
    return encode_command({
        AFFECTED_SOP_CLASS: _uid(model), COMMAND_FIELD: _US.pack(field), MESSAGE_ID: _US.pack(message_id),
        PRIORITY: _US.pack(priority), DATA_SET_TYPE: _US.pack(0x0001)})


def decode_command(data: bytes | bytearray | memoryview) -> dict[int, bytes]:
    """``{element number: value bytes}`` of an encoded command set.

    Raises
    ------
    MalformedMessage
        An element outside group 0000, or one that runs past the end.
    """
    view = memoryview(data)
    elements: dict[int, bytes] = {}
    offset, end = 0, len(view)
    while offset < end:
        if offset + 8 > end:
            raise MalformedMessage("a command set ends inside an element header")
        group, number, length = _ELEMENT.unpack_from(view, offset)
        offset += 8
        if group != 0x0000 or offset + length > end:
            raise MalformedMessage(f"a command set holds a malformed element ({group:04X},{number:04X})")
        elements[number] = bytes(view[offset:offset + length])
        offset += length
    return elements


def command_us(command: dict[int, bytes], number: int) -> int | None:
    """An US value of a decoded command set (``None``: absent or malformed)."""
    value = command.get(number)
    return _US.unpack(value)[0] if value is not None and len(value) == 2 else None


def command_uid(command: dict[int, bytes], number: int) -> str:
    """A UI value of a decoded command set (``""``: absent)."""
    return command.get(number, b"").rstrip(b"\0 ").decode("ascii", "replace")


def has_data_set(command: dict[int, bytes]) -> bool:
    return command_us(command, DATA_SET_TYPE) != NO_DATA_SET


def p_data_pdu(context_id: int, header: int, fragment: bytes) -> bytes:
    """A P-DATA-TF PDU carrying one presentation data value (a command or data set fragment)."""
    return (PDU_HEADER.pack(P_DATA_TF, 0x00, len(fragment) + 6) + PDV_HEADER.pack(len(fragment) + 2, context_id, header)
            + fragment)


def p_data_pdus(context_id: int, command: bool, payload: bytes, max_pdu: int) -> bytes:
    """A whole command set or data set as P-DATA-TF PDUs of at most ``max_pdu`` bytes (the
    peer's maximum; 0: any length), concatenated for one write."""
    fragment = max_pdu - 6 if max_pdu > 6 else max(len(payload), 1)
    pieces = [payload[n:n + fragment] for n in range(0, len(payload), fragment)] or [b""]
    flag = IS_COMMAND if command else 0
    return b"".join(p_data_pdu(context_id, flag | (IS_LAST if n == len(pieces) - 1 else 0), piece)
                    for n, piece in enumerate(pieces))


def split_pdvs(body: memoryview) -> Iterator[tuple[int, int, memoryview]]:
    """The presentation data values of a P-DATA-TF PDU's body: ``(context ID, message control
    header, fragment)``.

    Raises
    ------
    MalformedMessage
        A PDV that runs past the end of the PDU.
    """
    offset, end = 0, len(body)
    while offset < end:
        if offset + 6 > end:
            raise MalformedMessage("a P-DATA-TF PDU ends inside a PDV header")
        length, context_id, header = PDV_HEADER.unpack_from(body, offset)
        if length < 2 or offset + 4 + length > end:
            raise MalformedMessage(f"a PDV of {length} bytes does not fit in its P-DATA-TF PDU")
        yield context_id, header, body[offset + 6:offset + 4 + length]
        offset += 4 + length
