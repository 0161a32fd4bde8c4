"""The validator: what it accepts, what it rejects, and that it never crashes on bad bytes."""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from dicom_transfer.part10 import FileMeta, InvalidInstance, read_file_meta, validate_part10
from dicom_transfer.sample import instance_bytes, uid_for


def validate(data: bytes, keywords=()):
    return validate_part10(io.BytesIO(data), len(data), keywords)


def rejection(data: bytes) -> InvalidInstance:
    with pytest.raises(InvalidInstance) as excinfo:
        validate(data)
    return excinfo.value


@pytest.fixture(scope="module")
def good() -> bytes:
    return instance_bytes(uid_for("p10", 1), uid_for("p10", 2), uid_for("p10", 3), pixel_bytes=2048)


def test_valid_instance_gives_uids_and_requested_attributes(good):
    header = validate(good, ["PatientID", "Modality", "StudyDate"])
    assert (header.study_uid, header.series_uid, header.sop_uid) == (
        uid_for("p10", 1), uid_for("p10", 2), uid_for("p10", 3))
    assert header.transfer_syntax == "1.2.840.10008.1.2.1"
    assert header.attributes == {"PatientID": "PAT-1", "Modality": "MR", "StudyDate": "20260101"}


def test_implicit_vr_instance_is_valid():
    data = instance_bytes("1.2", "1.3", "1.4", implicit=True)
    assert validate(data).sop_uid == "1.4"


@pytest.mark.parametrize("name", [
    "CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm",
    "JPEG2000.dcm", "MR_small_RLE.dcm", "image_dfl.dcm", "SC_rgb_rle_2frame.dcm",
])
def test_pydicom_reference_files_are_valid(name):
    path = get_testdata_file(name)
    with open(path, "rb") as stream:
        header = validate_part10(stream, os.path.getsize(path))
    assert header.sop_uid == pydicom.dcmread(path).SOPInstanceUID


@pytest.mark.parametrize("name", ["MR_truncated.dcm", "rtplan_truncated.dcm"])
def test_truncated_files_that_pydicom_reads_silently_are_rejected(name):
    path = get_testdata_file(name)
    pydicom.dcmread(path)  # pydicom itself does not complain...
    with open(path, "rb") as stream:
        data = stream.read()
    assert rejection(data).check == "truncated"  # ...but these are missing bytes


@pytest.mark.skipif(shutil.which("dcmdump") is None, reason="dcmtk's dcmdump not installed")
@pytest.mark.parametrize("name", ["MR_truncated.dcm", "rtplan_truncated.dcm"])
def test_dcmtk_agrees_that_they_are_truncated(name):
    result = subprocess.run(["dcmdump", get_testdata_file(name)], capture_output=True, text=True)
    assert result.returncode != 0 or "E:" in result.stderr


@pytest.mark.parametrize(("data", "check", "words"), [
    (b"", "part10", "empty"),
    (b"hello\n" * 50, "part10", "DICM"),
    (b"\0" * 128 + b"DICM", "part10", "file meta"),
])
def test_not_part10(data, check, words):
    error = rejection(data)
    assert error.check == check and words in str(error)


def test_missing_preamble_is_rejected(good):
    assert rejection(good[132:]).check == "part10"


def test_every_truncation_is_rejected_or_lands_on_an_element_boundary(good):
    """Cut the file at every byte: each cut is rejected, except at the end of a top-level
    element after the UIDs (a file cut there is indistinguishable from a shorter valid one)."""
    stream = io.BytesIO(good)
    pydicom.filereader.read_preamble(stream, False)
    pydicom.filereader._read_file_meta_info(stream)
    ends = {raw.tag: raw.value_tell + raw.length
            for raw in pydicom.filereader.data_element_generator(stream, False, True)}
    boundaries = set(ends.values())
    uids_end = max(ends[t] for t in (0x0020000D, 0x0020000E, 0x00080018))
    accepted = []
    for cut in range(len(good)):
        try:
            validate(good[:cut])
            accepted.append(cut)
        except InvalidInstance:
            pass
    assert accepted, "cutting at the start of pixel data should leave a valid instance"
    assert all(cut in boundaries and cut >= uids_end for cut in accepted)
    assert validate(good).size == len(good)


def test_huge_declared_length_is_truncated_not_read(good):
    data = bytearray(good)
    position = data.rindex(b"\xe0\x7f\x10\x00OW")
    struct.pack_into("<L", data, position + 8, 0xFFFFFFF0)
    error = rejection(bytes(data))
    assert error.check == "truncated" and "(7FE0,0010)" in str(error)


def test_invalid_vr_is_a_parse_error(good):
    data = bytearray(good)
    position = data.index(b"\x10\x00\x20\x00LO")  # PatientID
    data[position + 4:position + 6] = b"\x01\x02"
    error = rejection(bytes(data))
    assert error.check == "parse" and "invalid VR" in str(error)


def _part10(dataset_bytes: bytes) -> bytes:
    meta = Dataset()
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    buffer = io.BytesIO()
    buffer.write(b"\0" * 128 + b"DICM")
    pydicom.filewriter.write_file_meta_info(buffer, pydicom.dataset.FileMetaDataset(meta),
                                            enforce_standard=False)
    return buffer.getvalue() + dataset_bytes


def _element(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    if vr in (b"SQ", b"OB", b"OW", b"UN"):
        return struct.pack("<HH", group, element) + vr + b"\0\0" + struct.pack("<L", len(value)) + value
    return struct.pack("<HH", group, element) + vr + struct.pack("<H", len(value)) + value


UIDS = (_element(0x0008, 0x0018, b"UI", b"1.2.3\0") + _element(0x0020, 0x000D, b"UI", b"1.2\0")
        + _element(0x0020, 0x000E, b"UI", b"1.3\0"))


def test_sequence_without_delimiter_is_truncated():
    endless = struct.pack("<HH", 0x0008, 0x1115) + b"SQ\0\0" + struct.pack("<L", 0xFFFFFFFF)
    endless += struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF) + _element(0x0008, 0x1150, b"UI", b"1.2\0")
    error = rejection(_part10(UIDS + endless))
    assert error.check == "truncated"


def test_deeply_nested_sequences_are_refused():
    inner = b""
    for _ in range(40):
        item = struct.pack("<HHL", 0xFFFE, 0xE000, len(inner)) + inner
        inner = _element(0x0008, 0x1115, b"SQ", item)
    error = rejection(_part10(UIDS + inner))
    assert error.check == "parse" and "nested deeper" in str(error)


def test_item_length_beyond_its_sequence_is_a_parse_error():
    item = struct.pack("<HHL", 0xFFFE, 0xE000, 500) + _element(0x0008, 0x1150, b"UI", b"1.2\0")
    sequence = struct.pack("<HH", 0x0008, 0x1115) + b"SQ\0\0" + struct.pack("<L", len(item)) + item
    error = rejection(_part10(UIDS + sequence + b"\0" * 600))
    assert error.check == "parse" and "enclosing" in str(error)


@pytest.mark.parametrize(("tag", "value", "words"), [
    ((0x0020, 0x000D), b"1.2.abc\0", "StudyInstanceUID '1.2.abc' is not a valid UID"),
    ((0x0020, 0x000E), b"1.02\0", "leading zero"),
    ((0x0008, 0x0018), b"../../etc", "SOPInstanceUID '../../etc' is not a valid UID"),
    ((0x0008, 0x0018), b"1." + b"2" * 63 + b"\0", "65 characters"),
    # only the one padding byte is removed, never other whitespace or control bytes
    ((0x0008, 0x0018), b" 1.2.3", "SOPInstanceUID ' 1.2.3' is not a valid UID"),
    ((0x0008, 0x0018), b"1.2.3\n", "is not a valid UID"),
    ((0x0008, 0x0018), b"1.2.3\x1c", "is not a valid UID"),
    ((0x0020, 0x000D), b"1.2\0\0", "is not a valid UID"),
    ((0x0020, 0x000D), b"1.2 \0", "is not a valid UID"),
])
def test_invalid_uids_are_rejected(tag, value, words):
    uids = {(0x0008, 0x0018): b"1.2.3\0", (0x0020, 0x000D): b"1.2\0", (0x0020, 0x000E): b"1.3\0"}
    uids[tag] = value
    data = b"".join(_element(*t, b"UI", v) for t, v in sorted(uids.items()))
    error = rejection(_part10(data))
    assert error.check == "uid" and words in str(error)


@pytest.mark.parametrize("padded", [b"1.2.3\0", b"1.2.3 ", b"1.2.34"])
def test_one_padding_byte_is_allowed(padded):
    uids = {(0x0008, 0x0018): padded, (0x0020, 0x000D): b"1.2\0", (0x0020, 0x000E): b"1.3\0"}
    data = _part10(b"".join(_element(*t, b"UI", v) for t, v in sorted(uids.items())))
    header = validate(data)
    assert header.sop_uid == padded.rstrip(b"\0 ").decode()


def test_missing_uid_is_named():
    data = _element(0x0008, 0x0018, b"UI", b"1.2.3\0") + _element(0x0020, 0x000D, b"UI", b"1.2\0")
    error = rejection(_part10(data))
    assert "SeriesInstanceUID (0020,000E) is missing" in str(error)


def test_large_file_is_validated_without_reading_pixel_data(tmp_path):
    """A 1 GB sparse instance validates while reading only its header."""
    header = _part10(UIDS) + struct.pack("<HH", 0x7FE0, 0x0010) + b"OB\0\0" + struct.pack("<L", 1 << 30)
    path = tmp_path / "big.dcm"
    with open(path, "wb") as out:
        out.write(header)
        out.truncate(len(header) + (1 << 30))

    class CountingReader(io.FileIO):
        bytes_read = 0

        def read(self, size=-1):
            data = super().read(size)
            CountingReader.bytes_read += len(data)
            return data

    with CountingReader(path) as stream:
        header_info = validate_part10(stream, path.stat().st_size)
    assert header_info.sop_uid == "1.2.3"
    assert CountingReader.bytes_read < 4096


def _verdict(stream: io.IOBase, size: int, head: bytes | None = None):
    try:
        header = validate_part10(stream, size, ["PatientID"], head)
    except InvalidInstance as exc:
        return exc.check, str(exc)
    return header


REFERENCE_FILES = [open(get_testdata_file(name), "rb").read()  # noqa: SIM115 - read at once
                   for name in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "JPEG2000.dcm", "ExplVR_BigEnd.dcm")]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, len(REFERENCE_FILES) - 1), edits=st.lists(
    st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=3),
    cut=st.floats(0.0, 1.0), claimed=st.sampled_from([0, 0, 1]), head=st.integers(0, 5000))
def test_the_in_memory_walk_gives_the_verdicts_of_the_general_walk(which, edits, cut, claimed, head):
    """A file read whole is walked from its bytes (a fast path), and so is the head of a larger one;
    the same bytes read as a stream take the general walk. All must say the same thing, message
    included, whatever the corruption."""
    data = bytearray(REFERENCE_FILES[which])
    for where, value in edits:
        data[int(where * len(data))] = value
    data = bytes(data[:max(1, int(cut * len(data)))]) if cut < 0.9 else bytes(data)
    size = len(data) - claimed  # a file that grew after it was listed
    general = _verdict(io.BufferedReader(io.BytesIO(data)), size)
    assert _verdict(io.BytesIO(data), size) == general
    assert _verdict(io.BufferedReader(io.BytesIO(data)), size, data[:head]) == general


@pytest.mark.parametrize("implicit", [False, True])
def test_file_meta_says_what_a_c_store_needs(implicit, tmp_path):
    """read_file_meta: the UIDs of group 0002 and where the data set starts (as pydicom says)."""
    data = instance_bytes("1.2.3", "1.2.3.4", "1.2.3.4.5", implicit=implicit)
    meta = read_file_meta(io.BytesIO(data), len(data))
    (tmp_path / "a.dcm").write_bytes(data)
    with open(tmp_path / "a.dcm", "rb") as stream:
        pydicom.filereader.read_preamble(stream, False)
        pydicom.filereader._read_file_meta_info(stream)
        offset = stream.tell()
    syntax = "1.2.840.10008.1.2" if implicit else "1.2.840.10008.1.2.1"
    assert meta == FileMeta("1.2.840.10008.5.1.4.1.1.4", "1.2.3.4.5", syntax, offset)
    without_instance_uid = data.replace(b"\x02\x00\x03\x00UI", b"\x02\x00\x05\x00UI", 1)
    with pytest.raises(InvalidInstance, match="Media Storage SOP Instance UID"):
        read_file_meta(io.BytesIO(without_instance_uid), len(data))
