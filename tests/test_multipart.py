"""The streaming multipart reader, with boundaries falling anywhere in the chunks."""

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dicom_transfer.io.multipart import MultipartError, boundary_of, iter_parts_to_files


def body(parts, boundary="b0undary", close=True):
    data = b"preamble to ignore\r\n"
    for part in parts:
        data += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n"
    if close:
        data += f"--{boundary}--\r\n".encode()
    return data


def read(data, chunk, tmp_path, boundary="b0undary"):
    counter = iter(range(10**6))

    def new_file():
        path = str(tmp_path / f"part{next(counter)}")
        return path, open(path, "wb")

    chunks = [data[i:i + chunk] for i in range(0, len(data), chunk)]
    out = []
    for headers, path, size in iter_parts_to_files(chunks, boundary, new_file):
        with open(path, "rb") as f:
            content = f.read()
        assert len(content) == size
        assert headers["content-type"] == "application/dicom"
        out.append(content)
        os.remove(path)
    return out


@settings(max_examples=60, deadline=None)
@given(parts=st.lists(st.binary(max_size=300), min_size=1, max_size=5), chunk=st.integers(1, 64))
def test_parts_survive_any_chunking(tmp_path_factory, parts, chunk):
    tmp = tmp_path_factory.mktemp("mp")
    assert read(body(parts), chunk, tmp) == parts


def test_part_containing_boundary_like_bytes(tmp_path):
    tricky = b"--b0undary at the start, \r\n--b0undar (short) and --b0undary without CRLF"
    assert read(body([tricky, b"x"]), 3, tmp_path) == [tricky, b"x"]


def test_truncated_answer_is_an_error(tmp_path):
    data = body([b"a" * 100, b"b" * 100], close=False)[:-50]
    with pytest.raises(MultipartError, match="truncated"):
        read(data, 16, tmp_path)


def test_boundary_of():
    assert boundary_of('multipart/related; type="application/dicom"; boundary="abc"') == "abc"
    assert boundary_of("multipart/related; boundary=xyz; type=application/dicom") == "xyz"
    with pytest.raises(MultipartError):
        boundary_of("application/json")
