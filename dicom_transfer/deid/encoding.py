"""The bytes a rewrite reads and writes itself, without pydicom: the header's elements read in one
piece, the file meta, simple elements, and the pixel data copied as it is.

Most of what the profile changes at the top level is a UID replaced, a value emptied or a dummy
text: :func:`encode_simple` writes those exactly as ``pydicom.filewriter.write_data_element``
does (same header, same padding) for plain ASCII values, several times faster; it answers
``None`` for anything else (sequences, numbers, person names, non-ASCII text...), which pydicom
then writes.
"""

from __future__ import annotations

import os
import re
import struct
from typing import BinaryIO

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.multival import MultiValue
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

from dicom_transfer.part10 import PIXEL_TAGS

CHUNK = 1 << 20
IMPLEMENTATION_CLASS_UID = "2.25.192873565209813385226396016101391402337"  # dicom-transfer's own
IMPLEMENTATION_VERSION_NAME = "DICOM_TRANSFER"
# VRs written as the value's text (pydicom's write_string and write_text agree for ASCII):
# padded with a space, UI with a NUL.
TEXT_VRS = frozenset({"UI", "CS", "AS", "DA", "TM", "DT", "LO", "SH", "LT", "ST", "UC", "UT"})
_LONG = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)
_PRINTABLE = re.compile(r"[ -\[\]-~]*")  # printable ASCII without the backslash (the value separator)


def element_header(tag: int, vr: str, length: int, implicit: bool, little: bool) -> bytes:
    """Tag, VR (explicit VR only) and length of an element with a defined length."""
    order = "<" if little else ">"
    if implicit:
        return struct.pack(order + "HHL", tag >> 16, tag & 0xFFFF, length)
    if vr in _LONG:
        return struct.pack(order + "HH2s2xL", tag >> 16, tag & 0xFFFF, vr.encode("ascii"), length)
    return struct.pack(order + "HH2sH", tag >> 16, tag & 0xFFFF, vr.encode("ascii"), length)


def encode_simple(element: DataElement | RawDataElement, implicit: bool, little: bool) -> bytes | None:
    """The element as pydicom writes it when its value is empty or plain ASCII text; else ``None``."""
    if not isinstance(element, DataElement):
        return None
    vr = element.VR
    if vr is None or len(vr) != 2:
        return None
    if element.is_empty:
        if element.is_undefined_length:
            return None
        return element_header(int(element.tag), vr, 0, implicit, little)
    if vr not in TEXT_VRS:
        return None
    value = element.value
    values = [value] if isinstance(value, str) else list(value) if isinstance(value, MultiValue) else None
    if values is None or not all(isinstance(v, str) and _PRINTABLE.fullmatch(v) for v in values):
        return None
    data = "\\".join(values).encode("ascii")
    if len(data) % 2:
        data += b"\0" if vr == "UI" else b" "
    if not implicit and vr not in _LONG and len(data) > 0xFFFF:
        return None  # pydicom writes it as UN
    return element_header(int(element.tag), vr, len(data), implicit, little) + data


class HeaderReader:
    """The bytes of the elements before the pixel data, read at once; those after it (rare) one by one."""

    def __init__(self, source: BinaryIO, elements: list[tuple[int, int, int]], head: bytes = b"") -> None:
        """``head``: the file's first bytes, if they are in memory already (read from there when
        they hold the whole header)."""
        self.source = source
        self.file_head = head
        pixels = [start for tag, start, _ in elements if tag in PIXEL_TAGS]
        self.start = elements[0][1] if elements else 0
        self.end = pixels[0] if pixels else (elements[-1][2] if elements else 0)
        if self.end <= len(head):
            self.head = head[self.start:self.end]
            return
        source.seek(self.start)
        self.head = source.read(self.end - self.start)
        if len(self.head) != self.end - self.start:
            raise EOFError

    def in_memory(self, start: int, end: int) -> bytes:
        """Bytes ``start:end`` if the file's first bytes given hold them, else none (``b""``)."""
        return self.file_head[start:end] if end <= len(self.file_head) else b""

    def __call__(self, start: int, end: int) -> bytes:
        if self.start <= start and end <= self.end:
            return self.head[start - self.start:end - self.start]
        self.source.seek(start)
        data = self.source.read(end - start)
        if len(data) != end - start:
            raise EOFError
        return data


def file_meta_bytes(sop_class: str, sop_instance: str, transfer_syntax: str) -> bytes:
    """Preamble, prefix and file meta group (explicit VR little endian), as pydicom's
    ``write_file_meta_info`` writes them, without its per-file validation."""
    elements = b"".join([
        _meta_element(0x0001, b"OB", b"\x00\x01"),
        _meta_element(0x0002, b"UI", _padded(sop_class, b"\0")),
        _meta_element(0x0003, b"UI", _padded(sop_instance, b"\0")),
        _meta_element(0x0010, b"UI", _padded(transfer_syntax, b"\0")),
        _meta_element(0x0012, b"UI", _padded(IMPLEMENTATION_CLASS_UID, b"\0")),
        _meta_element(0x0013, b"SH", _padded(IMPLEMENTATION_VERSION_NAME, b" ")),
    ])
    return bytes(128) + b"DICM" + _meta_element(0x0000, b"UL", struct.pack("<L", len(elements))) + elements


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":
        return struct.pack("<HH2s2xL", 0x0002, element, vr, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def _padded(value: str | list[str], padding: bytes) -> bytes:
    text = value if isinstance(value, str) else "\\".join(str(v) for v in value)
    data = text.encode("latin-1")
    return data + padding if len(data) % 2 else data


def copy_range(source: BinaryIO, out: BinaryIO, start: int, end: int) -> None:
    """Copy bytes ``start:end`` of ``source`` to ``out``: in the kernel between local files
    (``copy_file_range``), else in chunks."""
    done = _copy_file_range(source, out, start, end)
    source.seek(start + done)
    remaining = end - start - done
    while remaining:
        chunk = source.read(min(CHUNK, remaining))
        if not chunk:
            raise EOFError
        out.write(chunk)
        remaining -= len(chunk)


def _copy_file_range(source: BinaryIO, out: BinaryIO, start: int, end: int) -> int:
    """How many bytes ``copy_file_range`` copied (0 where the files are not both local ones)."""
    try:
        source_fd, out_fd = source.fileno(), out.fileno()
    except (AttributeError, OSError, ValueError):
        return 0
    out.flush()
    position = out.tell()
    done = 0
    try:
        while done < end - start:
            copied = os.copy_file_range(source_fd, out_fd, end - start - done, start + done, position + done)
            if not copied:
                break
            done += copied
    except OSError:  # not supported between these files: the rest is copied in chunks
        pass
    out.seek(position + done)
    return done
