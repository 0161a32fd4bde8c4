"""The plain DIMSE logic: peer addresses, AE titles, status codes, date chunks, context groups;
and that the DIMSE DoFns pickle (as a distributed runner ships them)."""

from __future__ import annotations

import datetime as dt
import pickle

import pytest

from dicom_transfer.dimse import (
    MAX_CONTEXTS,
    PeerAddress,
    check_ae_title,
    date_chunks,
    group_contexts,
    parse_date_range,
    parse_listen_address,
    parse_peer_address,
    status_category,
    status_text,
    store_outcome,
)
from dicom_transfer.dimse_wire import (
    C_FIND_RQ,
    C_GET_RQ,
    MalformedMessage,
    c_store_command,
    c_store_response,
    command_uid,
    command_us,
    decode_command,
    p_data_pdus,
    query_command,
    split_pdvs,
)


def test_peer_addresses():
    assert parse_peer_address("dimse://PACS@10.0.0.5:104") == PeerAddress("10.0.0.5", 104, "PACS")
    assert parse_peer_address("PACS@pacs.example.org:11112") == PeerAddress("pacs.example.org", 11112, "PACS")
    assert parse_peer_address("dimse://A B@[::1]:104").host == "::1"
    assert str(parse_peer_address("dimse://PACS@h:104")) == "dimse://PACS@h:104"
    for bad in ("pacs:104", "dimse://PACS@host", "dimse://PACS@host:0", "dimse://PACS@host:70000",
                "dimse://SEVENTEEN-CHARACTER@h:1", "dimse://BACK\\SLASH@h:1", "http://x@h:1/path"):
        with pytest.raises(ValueError):
            parse_peer_address(bad)
    assert parse_listen_address("127.0.0.1:11112") == ("127.0.0.1", 11112)
    assert parse_listen_address(":11112") == ("0.0.0.0", 11112)
    with pytest.raises(ValueError):
        parse_listen_address("localhost")


def test_ae_titles():
    assert check_ae_title(" STORESCU ") == "STORESCU"
    for bad in ("", "    ", "X" * 17, "A\\B", "É"):
        with pytest.raises(ValueError):
            check_ae_title(bad)


@pytest.mark.parametrize("code, category", [
    (0x0000, "success"), (0xFF00, "pending"), (0xFF01, "pending"), (0xFE00, "cancel"),
    (0xB000, "warning"), (0xB007, "warning"), (0x0001, "warning"), (0x0107, "warning"),
    (0xA700, "failure"), (0xA702, "failure"), (0xA801, "failure"), (0xA900, "failure"),
    (0xC000, "failure"), (0xC211, "failure"), (0x0111, "failure"), (0x0122, "failure"),
])
def test_status_categories(code, category):
    assert status_category(code) == category


@pytest.mark.parametrize("code, outcome", [
    (0x0000, "success"), (0xB007, "warning"), (0x0111, "unchanged"), (0xA700, "failure"),
    (0xC000, "failure"), (0x0122, "failure"), (0xFF00, "failure"),  # pending is no answer to a C-STORE
])
def test_what_a_c_store_status_means_for_the_instance(code, outcome):
    assert store_outcome(code) == outcome


def test_status_texts_name_the_code():
    assert status_text(0xA700) == "0xA700 (refused: out of resources)"
    assert status_text(0xA7FE) == "0xA7FE (refused: out of resources)"
    assert status_text(0xC123) == "0xC123 (error: cannot understand)"
    assert status_text(0x1234) == "0x1234"


def test_date_ranges_and_chunks():
    start, end = parse_date_range("20240101-20240110")
    assert (start, end) == (dt.date(2024, 1, 1), dt.date(2024, 1, 10))
    assert parse_date_range("20240229") == (dt.date(2024, 2, 29),) * 2
    assert list(date_chunks(start, end, 4)) == ["20240101-20240104", "20240105-20240108", "20240109-20240110"]
    assert list(date_chunks(start, start, 7)) == ["20240101"]
    assert len(list(date_chunks(dt.date(2023, 1, 1), dt.date(2023, 12, 31), 1))) == 365
    for bad in ("2024-01-01", "20240110-20240101", "20241301", "yesterday"):
        with pytest.raises(ValueError):
            parse_date_range(bad)


def test_context_groups_fit_an_association_and_keep_classes_together():
    pairs = [(f"1.2.{c}", f"1.2.840.10008.1.2.{t}") for c in range(10) for t in range(20)]
    groups = group_contexts(pairs + pairs[:5], reserved=2)  # duplicates count once
    assert sorted(p for g in groups for p in g) == sorted(set(pairs))
    assert all(len(g) <= MAX_CONTEXTS - 2 for g in groups)
    for group in groups:  # 20 syntaxes per class: 6 classes fit whole in 126
        assert {c for c, _ in group} == {c for c, _ in pairs if any(c == d for d, _ in group)}
    huge = [("1.2.3", f"1.2.840.10008.1.2.{t}") for t in range(300)]  # one class over the limit
    assert [len(g) for g in group_contexts(huge)] == [128, 128, 44]
    assert group_contexts([]) == []


def test_dimse_transforms_pickle():
    pytest.importorskip("pynetdicom")
    from dicom_transfer.io.dicomweb import DicomwebClient
    from dicom_transfer.io.dimse import DimseSettings
    from dicom_transfer.layout import Layout
    from dicom_transfer.transforms.dimse_migrate import DimseMigrateSeries
    from dicom_transfer.transforms.dimse_source import DimseExpandToInstances, DimseRetrieveAndWrite
    from dicom_transfer.transforms.dimse_store import DimseStoreInstances

    settings = DimseSettings(PeerAddress("127.0.0.1", 104, "PACS"))
    for transform in (DimseExpandToInstances(settings), DimseStoreInstances(settings),
                      DimseRetrieveAndWrite(settings, "/tmp/out", Layout.parse("uid"), move_destination="X",
                                            journal="/tmp/j"),
                      DimseMigrateSeries(settings, DicomwebClient("http://127.0.0.1:1/dicom-web"),
                                         move_destination="X", journal="/tmp/j")):
        assert pickle.loads(pickle.dumps(transform)) is not None


def test_a_held_checkpoint_keeps_the_reactor_stopped_and_says_when_it_is():
    """pynetdicom's own "paused" flag is True while its reactor still passes a set checkpoint;
    ``blocked`` is True only while a waiter is really stopped, and a held checkpoint ignores the
    ``set()`` every ``send_c_*()`` ends with."""
    import threading
    import time

    from dicom_transfer.io.dimse import _Checkpoint

    checkpoint = _Checkpoint()
    assert checkpoint.wait(0) and not checkpoint.blocked  # set: a waiter passes
    checkpoint.held = True
    checkpoint.clear()
    passed = threading.Event()
    reactor = threading.Thread(target=lambda: (checkpoint.wait(), passed.set()), daemon=True)
    reactor.start()
    deadline = time.monotonic() + 5
    while not checkpoint.blocked and time.monotonic() < deadline:
        time.sleep(0.001)
    assert checkpoint.blocked
    checkpoint.set()  # what send_c_store() does when answered: ignored while held
    assert not passed.wait(0.05) and checkpoint.blocked
    checkpoint.held = False
    checkpoint.set()
    assert passed.wait(5)
    reactor.join(5)
    assert not checkpoint.blocked


@pytest.mark.parametrize("sop_class, sop, message_id", [
    ("1.2.840.10008.5.1.4.1.1.4", "1.2.3.4.5", 1), ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.56", 65535)])
def test_c_store_command_is_what_pynetdicom_encodes(sop_class, sop, message_id):
    """The product frames C-STORE requests itself (io.dimse.Link._send_store): the same bytes."""
    import io

    pytest.importorskip("pynetdicom")
    from pynetdicom.dimse_messages import C_STORE_RQ
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.dsutils import encode

    request = C_STORE()
    request.MessageID, request.Priority = message_id, 2
    request.AffectedSOPClassUID, request.AffectedSOPInstanceUID = sop_class, sop
    request.DataSet = io.BytesIO(b"data")
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    assert c_store_command(message_id, sop_class, sop) == encode(message.command_set, True, True)


def _pynetdicom_command(message_class: str, primitive_class: str, **values) -> bytes:
    import io

    from pynetdicom import dimse_messages, dimse_primitives
    from pynetdicom.dsutils import encode

    primitive = getattr(dimse_primitives, primitive_class)()
    for name, value in values.items():
        setattr(primitive, name, value)
    message = getattr(dimse_messages, message_class)()
    if message_class.endswith("_RQ"):
        primitive.Identifier = io.BytesIO(b"data")  # (C-STORE: DataSet) a data set follows
        if primitive_class == "C_STORE":
            primitive.DataSet = primitive.Identifier
    message.primitive_to_message(primitive)
    return encode(message.command_set, True, True)


@pytest.mark.parametrize("status", [0x0000, 0xA700, 0xC000, 0xB007])
def test_c_store_response_is_what_pynetdicom_encodes(status):
    """C-GET sub-operations are answered by the product (io.query_retrieve): the same bytes."""
    pytest.importorskip("pynetdicom")
    expected = _pynetdicom_command("C_STORE_RSP", "C_STORE", MessageIDBeingRespondedTo=7, Status=status,
                                   AffectedSOPClassUID="1.2.840.10008.5.1.4.1.1.4",
                                   AffectedSOPInstanceUID="1.2.3.45")
    assert c_store_response(7, "1.2.840.10008.5.1.4.1.1.4", "1.2.3.45", status) == expected


@pytest.mark.parametrize(("field", "message", "primitive", "model"), [
    (C_GET_RQ, "C_GET_RQ", "C_GET", "1.2.840.10008.5.1.4.1.2.2.3"),
    (C_FIND_RQ, "C_FIND_RQ", "C_FIND", "1.2.840.10008.5.1.4.1.2.2.1")])
def test_query_commands_are_what_pynetdicom_encodes(field, message, primitive, model):
    pytest.importorskip("pynetdicom")
    expected = _pynetdicom_command(message, primitive, MessageID=65535, Priority=2, AffectedSOPClassUID=model)
    assert query_command(field, 65535, model) == expected


def test_command_sets_and_pdus_read_back():
    command = decode_command(c_store_response(3, "1.2.840.10008.5.1.4.1.1.2", "1.2.3", 0xC000))
    assert command_us(command, 0x0120) == 3 and command_us(command, 0x0900) == 0xC000
    assert command_uid(command, 0x1000) == "1.2.3"  # its padding NUL removed
    with pytest.raises(MalformedMessage):
        decode_command(c_store_response(3, "1.2", "1.2.3", 0)[:-2])
    payload = bytes(range(256)) * 40  # 10,240 bytes in PDUs of at most 4,096
    stream = p_data_pdus(5, False, payload, 4096)
    pdvs, offset = [], 0
    while offset < len(stream):
        length = int.from_bytes(stream[offset + 2:offset + 6], "big")
        assert stream[offset] == 0x04 and length <= 4096  # the maximum is of the PDU's variable field
        pdvs += list(split_pdvs(memoryview(stream[offset + 6:offset + 6 + length])))
        offset += 6 + length
    assert [(cx, header) for cx, header, _ in pdvs] == [(5, 0x00), (5, 0x00), (5, 0x02)]
    assert b"".join(bytes(fragment) for _, _, fragment in pdvs) == payload
    with pytest.raises(MalformedMessage):
        list(split_pdvs(memoryview(stream[6:100])))


@pytest.mark.parametrize("flag", ["--move-journal", "--move-staging"])
def test_c_move_options_are_checked_alike_for_export_and_migrate(flag):
    import argparse

    from dicom_transfer.pipelines.dimse import _move_settings
    from dicom_transfer.pipelines.dimse_migrate import staged_move
    from dicom_transfer.pipelines.options import UsageError

    def check(**given):
        values = {"move_destination": None, "move_listen": None, "move_journal": None, "move_staging": None}
        values.update(given)
        options = argparse.Namespace(**values)
        if flag == "--move-journal":
            return _move_settings(options, "/out")
        return staged_move(options)

    attribute = flag[2:].replace("-", "_")
    assert check() is None
    with pytest.raises(UsageError, match=f"--move-listen and {flag} go with --move-destination"):
        check(move_listen="127.0.0.1:11112")
    with pytest.raises(UsageError, match=f"--move-listen and {flag} go with --move-destination"):
        check(**{attribute: "/elsewhere"})
    with pytest.raises(UsageError, match=f"needs --move-listen HOST:PORT .* or {flag} URL"):
        check(move_destination="RECEIVER")
    with pytest.raises(UsageError, match="--move-destination"):
        check(move_destination="A" * 17, move_listen="127.0.0.1:11112")
    with pytest.raises(UsageError):
        check(move_destination="RECEIVER", move_listen="127.0.0.1:0")
    settings = check(move_destination="RECEIVER", **{attribute: "/elsewhere/"})
    assert (settings.ae_title, settings.listen) == ("RECEIVER", None)
    assert (settings.journal if flag == "--move-journal" else settings.staging) == "/elsewhere" + (
        "/" if flag == "--move-journal" else "")
