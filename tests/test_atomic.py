"""Atomic local file creation, with and without unnamed temporary files."""

import os

import pytest

from dicom_transfer.io import atomic


@pytest.fixture(params=[True, False], ids=["O_TMPFILE", "temp+rename"])
def mode(request, monkeypatch):
    if request.param and not atomic._Support.unnamed:
        pytest.skip("unnamed temporary files are not available here")
    monkeypatch.setattr(atomic._Support, "unnamed", request.param)
    return request.param


def fill_with(data: bytes):
    def fill(fd: int) -> int:
        return os.write(fd, data)
    return fill


def test_creates_the_file_and_leaves_nothing_else(tmp_path, mode):
    target = tmp_path / "a.dcm"
    assert atomic.write_file(str(target), fill_with(b"hello"), 5) == 5
    assert target.read_bytes() == b"hello"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.dcm"]


def test_never_replaces_an_existing_file(tmp_path, mode):
    target = tmp_path / "a.dcm"
    target.write_bytes(b"old")
    with pytest.raises(atomic.DestinationExists):
        atomic.write_file(str(target), fill_with(b"new"), 3)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.dcm"]


def test_overwrite_replaces(tmp_path, mode):
    target = tmp_path / "a.dcm"
    target.write_bytes(b"old")
    atomic.write_file(str(target), fill_with(b"newer"), 5, overwrite=True)
    assert target.read_bytes() == b"newer"


def test_wrong_size_or_failure_leaves_no_file(tmp_path, mode):
    target = tmp_path / "a.dcm"
    with pytest.raises(OSError, match="changed during the copy"):
        atomic.write_file(str(target), fill_with(b"short"), 99)

    def failing(fd):
        os.write(fd, b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic.write_file(str(target), failing, 4)
    assert list(tmp_path.iterdir()) == []


def test_copy_contents_copies_every_byte(tmp_path):
    source = tmp_path / "s"
    source.write_bytes(os.urandom(3 * atomic.CHUNK + 17))
    fd = os.open(tmp_path / "t", os.O_WRONLY | os.O_CREAT)
    try:
        assert atomic.copy_contents(str(source), fd) == source.stat().st_size
    finally:
        os.close(fd)
    assert (tmp_path / "t").read_bytes() == source.read_bytes()
