"""The bytes of the simple elements a rewrite produces, without pydicom's generic writer.

Most of what the profile changes at the top level is a UID replaced, a value emptied or a dummy
text: :func:`encode_simple` writes those exactly as ``pydicom.filewriter.write_data_element``
does (same header, same padding) for plain ASCII values, several times faster; it answers
``None`` for anything else (sequences, numbers, person names, non-ASCII text...), which pydicom
then writes.
"""

from __future__ import annotations

import re
import struct

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.multival import MultiValue
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

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
