"""Validate a DICOM Part 10 file while reading as little of it as possible.

pydicom reads truncated files silently, so this module walks the element
structure itself: it reads each element header, checks that the declared
length fits in the enclosing item or in the file, and seeks over values it
does not need (pixel data included). Only the values of a few requested
top-level attributes are read; pydicom decodes them (character sets, VRs).
Memory use is bounded whatever the file size.

pydicom (~0.3 s to import, numpy included) is imported only when it is needed: to decode an
attribute other than the UIDs, to look up the VR of an implicit-VR element, or to name a keyword.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import struct
import tempfile
import zlib
from collections.abc import Iterable
from typing import BinaryIO, NamedTuple, cast

from dicom_transfer.uids import uid_problem

PREAMBLE_LENGTH = 128
UNDEFINED = 0xFFFFFFFF
MAX_DEPTH = 32
MAX_CAPTURED_VALUE = 64 * 1024
MAX_INFLATED_BYTES = 1 << 30

IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"
DEFLATED = ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1")

ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
STUDY_UID, SERIES_UID, SOP_UID = 0x0020000D, 0x0020000E, 0x00080018
SPECIFIC_CHARACTER_SET = 0x00080005
TRANSFER_SYNTAX_UID = 0x00020010
MEDIA_STORAGE_SOP_CLASS_UID, MEDIA_STORAGE_SOP_INSTANCE_UID = 0x00020002, 0x00020003
PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})

LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
SHORT_VRS = frozenset(
    {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT",
     b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
)


class InvalidInstance(ValueError):
    """The file is not an acceptable DICOM instance.

    Attributes
    ----------
    check:
        Which check failed: ``part10``, ``parse``, ``truncated`` or ``uid``.
    """

    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check


@dataclasses.dataclass(frozen=True)
class InstanceHeader:
    """What validation learned about an instance."""

    study_uid: str
    series_uid: str
    sop_uid: str
    transfer_syntax: str
    size: int
    attributes: dict[str, object] = dataclasses.field(default_factory=dict)


class Captured(NamedTuple):
    """A value read as it is in the file: the fields of pydicom's ``RawDataElement``, which
    :func:`validate_part10` makes of it when pydicom decodes it."""

    tag: int
    VR: str | None
    length: int
    value: bytes
    value_tell: int
    is_implicit_VR: bool
    is_little_endian: bool
    is_raw: bool = True
    is_undefined_length: bool = False


def keyword_tags(keywords: Iterable[str]) -> dict[str, int]:
    """Map DICOM keywords to tags; raise ``ValueError`` for an unknown keyword."""
    if not keywords:
        return {}
    from pydicom.datadict import tag_for_keyword

    tags = {}
    for keyword in keywords:
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise ValueError(f"{keyword!r} is not a DICOM keyword")
        tags[keyword] = tag
    return tags


def validate_part10(
    stream: BinaryIO, size: int, keywords: Iterable[str] = (), head: bytes | None = None
) -> InstanceHeader:
    """Validate a Part 10 file and return its UIDs and requested attributes.

    Parameters
    ----------
    stream:
        Seekable binary stream positioned at the start of the file.
    size:
        The file's size in bytes (used for the truncation check).
    keywords:
        Top-level attributes to return in :attr:`InstanceHeader.attributes`
        (absent ones are left out).
    head:
        The file's first bytes, if they are in memory already (the header is then walked
        from them; the whole file, for a ``BytesIO`` stream).

    Raises
    ------
    InvalidInstance
        Saying which check failed and where.
    """
    return _validate(stream, size, keywords, head)[0]


def validate_and_map(stream: BinaryIO, size: int, head: bytes | None = None
                     ) -> tuple[InstanceHeader, list[tuple[int, int, int]] | None]:
    """:func:`validate_part10` and :func:`map_elements` in one walk of the file: its header, and
    where each top-level element is (``None`` for a deflated dataset).

    Raises
    ------
    InvalidInstance
        As :func:`validate_part10`.
    """
    header, walker = _validate(stream, size, (), head)
    return header, None if header.transfer_syntax in DEFLATED else walker.elements


def _validate(stream: BinaryIO, size: int, keywords: Iterable[str],
              head: bytes | None) -> tuple[InstanceHeader, _Walker]:
    wanted = keyword_tags(keywords)
    capture = {STUDY_UID, SERIES_UID, SOP_UID, SPECIFIC_CHARACTER_SET, *wanted.values()}
    transfer_syntax, walker = _walk_file(stream, size, capture, head)
    implicit = transfer_syntax == IMPLICIT_VR_LE
    little = transfer_syntax != EXPLICIT_VR_BE

    uids = []
    for tag, keyword in ((STUDY_UID, "StudyInstanceUID"), (SERIES_UID, "SeriesInstanceUID"),
                         (SOP_UID, "SOPInstanceUID")):
        if tag not in walker.captured:
            raise InvalidInstance("uid", f"{keyword} {_tag_text(tag)} is missing")
        value = _uid_text(walker.captured[tag].value)
        problem = uid_problem(value)
        if problem:
            raise InvalidInstance(
                "uid", f"{keyword} {_shorten(value)!r} is not a valid UID: {problem}"
            )
        uids.append(value)
    attributes: dict[str, object] = {}
    # The UIDs checked above are their decoded values already (pydicom would read the same
    # digits and dots); the rest are decoded by pydicom, which costs ~0.1 ms an attribute.
    decoded = dict(zip((STUDY_UID, SERIES_UID, SOP_UID), uids, strict=True))
    if any(tag not in decoded for tag in wanted.values()):
        from pydicom.dataelem import RawDataElement
        from pydicom.dataset import Dataset
        from pydicom.tag import Tag

        dataset = Dataset({Tag(tag): RawDataElement(Tag(tag), *element[1:])
                           for tag, element in walker.captured.items()})
        dataset.set_original_encoding(implicit, little, None)
    for keyword, tag in wanted.items():
        if tag in decoded:
            attributes[keyword] = decoded[tag]
        elif tag in walker.captured:
            try:
                attributes[keyword] = dataset[tag].value
            except Exception as exc:  # pydicom raises many types for bad values
                raise InvalidInstance("parse", f"{keyword} cannot be decoded: {exc}") from exc
    return InstanceHeader(uids[0], uids[1], uids[2], transfer_syntax, size, attributes), walker


@dataclasses.dataclass(frozen=True)
class FileMeta:
    """What a Part-10 file's meta information says, and where its data set starts."""

    sop_class: str
    sop_instance: str
    transfer_syntax: str
    dataset_offset: int


def read_file_meta(stream: BinaryIO, size: int) -> FileMeta:
    """The SOP class, SOP instance UID and transfer syntax of a Part-10 file's meta information,
    and the byte offset of its data set (what a C-STORE sends as it is). Reads group 0002 only.

    Raises
    ------
    InvalidInstance
        No preamble and 'DICM', a malformed group 0002, or one of the three UIDs missing.
    """
    walker = _walk_file_meta(stream, size, {MEDIA_STORAGE_SOP_CLASS_UID, MEDIA_STORAGE_SOP_INSTANCE_UID})
    uids = []
    for tag, name in ((MEDIA_STORAGE_SOP_CLASS_UID, "Media Storage SOP Class UID"),
                      (MEDIA_STORAGE_SOP_INSTANCE_UID, "Media Storage SOP Instance UID"),
                      (TRANSFER_SYNTAX_UID, "Transfer Syntax UID")):
        raw = walker.captured.get(tag)
        if raw is None:
            raise InvalidInstance("part10", f"file meta information has no {name} {_tag_text(tag)}")
        uids.append(_uid_text(raw.value))
    sop_class, sop_instance, transfer_syntax = uids
    return FileMeta(sop_class, sop_instance, transfer_syntax, dataset_offset=walker.pos)


def _walk_file_meta(stream: BinaryIO, size: int, capture: set[int], head: bytes | None = None) -> _Walker:
    """Check preamble and 'DICM', walk group 0002 (capturing ``capture`` and the transfer syntax);
    the walker stops where the data set starts. ``head``: as for :func:`validate_part10`."""
    if size == 0:
        raise InvalidInstance("part10", "file is empty (0 bytes)")
    if head is not None and len(head) >= PREAMBLE_LENGTH + 4:  # what the stream would give
        start = head[:PREAMBLE_LENGTH + 4]
        stream.seek(PREAMBLE_LENGTH + 4)
    else:
        start = stream.read(PREAMBLE_LENGTH + 4)
    if len(start) < PREAMBLE_LENGTH + 4:
        raise InvalidInstance(
            "part10", f"file has only {len(start)} bytes: too short for the 128-byte preamble and 'DICM'"
        )
    if start[PREAMBLE_LENGTH:] != b"DICM":
        raise InvalidInstance(
            "part10", "no 'DICM' prefix after the 128-byte preamble: not a DICOM Part 10 file"
        )
    meta_walker = _Walker(stream, size, implicit=False, little=True, capture={TRANSFER_SYNTAX_UID, *capture},
                          head=head)
    meta_walker.walk_file_meta()
    return meta_walker


def _walk_file(stream: BinaryIO, size: int, capture: set[int],
               head: bytes | None = None) -> tuple[str, _Walker]:
    """Check preamble and file meta, walk the dataset; return the transfer syntax and the walker."""
    meta_walker = _walk_file_meta(stream, size, set(), head)
    raw_ts = meta_walker.captured.get(TRANSFER_SYNTAX_UID)
    if raw_ts is None:
        raise InvalidInstance("part10", "file meta information has no Transfer Syntax UID (0002,0010)")
    transfer_syntax = _uid_text(raw_ts.value)
    if uid_problem(transfer_syntax):
        raise InvalidInstance("part10", f"Transfer Syntax UID {transfer_syntax[:70]!r} is not a valid UID")

    implicit = transfer_syntax == IMPLICIT_VR_LE
    little = transfer_syntax != EXPLICIT_VR_BE
    dataset_stream, dataset_size = stream, size
    if transfer_syntax in DEFLATED:
        dataset_stream, dataset_size, head = *_inflate(stream, size), None
    walker = _Walker(dataset_stream, dataset_size, implicit=implicit, little=little, capture=capture, head=head)
    walker.walk_dataset()
    return transfer_syntax, walker


def map_elements(stream: BinaryIO, size: int) -> tuple[str, list[tuple[int, int, int]] | None]:
    """The transfer syntax, and where each top-level element of the dataset is in the file.

    Returns ``(transfer_syntax, [(tag, start, end), ...])``: the byte offsets of each element's
    header and of the end of its value, in file order, so that elements can be copied as they
    are; ``None`` when the dataset is deflated (offsets in the file then mean nothing). Reads
    headers only.

    Raises
    ------
    InvalidInstance
        As :func:`validate_part10`.
    """
    transfer_syntax, walker = _walk_file(stream, size, set())
    if transfer_syntax in DEFLATED:
        return transfer_syntax, None
    return transfer_syntax, walker.elements

def _uid_text(value: bytes | None) -> str:
    """A UI value without its one padding byte (PS3.5 6.2: a trailing NUL to even length; a trailing
    space is tolerated, as pydicom does). Nothing else is removed: a UID with a leading space, a line
    break or a control byte is not the UID without them, and two such encodings must not share a path."""
    text = (value or b"").decode("ascii", "replace")  # a zero-length value is read as None
    return text[:-1] if text.endswith(("\x00", " ")) else text


def _shorten(value: str, limit: int = 70) -> str:
    return value if len(value) <= limit else value[:limit] + "..."


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _inflate(stream: BinaryIO, size: int) -> tuple[BinaryIO, int]:
    """Inflate a deflated dataset into a spooled temporary file (bounded memory and ratio)."""
    limit = max(MAX_INFLATED_BYTES, 64 * size)
    out = tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024)  # noqa: SIM115 - returned
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    try:
        while chunk := stream.read(1024 * 1024):
            while chunk:
                piece = inflater.decompress(chunk, 4 * 1024 * 1024)
                chunk = inflater.unconsumed_tail
                total += len(piece)
                if total > limit:
                    raise InvalidInstance(
                        "parse", f"deflated dataset inflates beyond {limit} bytes: refusing it")
                out.write(piece)
        out.write(inflater.flush())
    except zlib.error as exc:
        raise InvalidInstance("parse", f"deflated dataset is corrupt: {exc}") from exc
    if not inflater.eof:
        raise InvalidInstance("truncated", "deflated dataset ends before its deflate stream does")
    length = out.tell()
    out.seek(0)
    # SpooledTemporaryFile is a binary file object, but typeshed does not declare it a BinaryIO
    return cast(BinaryIO, out), length


# (tag, short length, long length) of each byte order, made once
_STRUCTS = {order: (struct.Struct(order + "HH"), struct.Struct(order + "H"), struct.Struct(order + "L"))
            for order in "<>"}


class _Walker:
    """Walks elements, checking every declared length against its bounds."""

    @property
    def endian(self) -> str:
        return self._endian

    @endian.setter
    def endian(self, value: str) -> None:
        self._endian = value
        self.tag_struct, self.short_struct, self.long_struct = _STRUCTS[value]

    def __init__(self, stream: BinaryIO, size: int, *, implicit: bool, little: bool,
                 capture: set[int], head: bytes | None = None) -> None:
        self.stream = stream
        self.size = size
        self.implicit = implicit
        self.little = little
        self.endian = "<" if little else ">"
        self.capture = capture
        self.captured: dict[int, Captured] = {}
        self.elements: list[tuple[int, int, int]] = []  # top-level elements: (tag, header offset, end)
        self.pos = stream.tell()
        # What is in memory (a file read whole, or its head) is walked from its bytes where it
        # can be (see _plain_elements).
        self.data = stream.getvalue() if isinstance(stream, io.BytesIO) else head

    # -- low level -------------------------------------------------------
    def _read(self, count: int, what: str) -> bytes:
        end = self.pos + count
        if self.data is not None and end <= len(self.data):  # in memory: no read of the stream
            data = self.data[self.pos:end]
            self.pos = end
            self.stream.seek(end)
            return data
        data = self.stream.read(count)
        if len(data) != count:
            raise InvalidInstance(
                "truncated",
                f"file ends at byte {self.pos + len(data)} inside {what} starting at byte {self.pos}",
            )
        self.pos += count
        return data

    def _skip(self, count: int) -> None:
        self.pos += count
        self.stream.seek(self.pos)

    def _header(self, limit: int | None) -> tuple[int, bytes | None, int, int]:  # noqa: ARG002
        """Read one element header: (tag, VR or None, length, offset)."""
        offset = self.pos
        head = self._read(8, "an element header")
        group, element = self.tag_struct.unpack_from(head)
        tag = (group << 16) | element
        if group == 0xFFFE or self.implicit:  # items, delimiters, implicit VR: 4-byte length
            return tag, None, self.long_struct.unpack_from(head, 4)[0], offset
        vr = head[4:6]
        if vr in SHORT_VRS:
            return tag, vr, self.short_struct.unpack_from(head, 6)[0], offset
        if vr in LONG_VRS:
            return tag, vr, self.long_struct.unpack(self._read(4, "an element header"))[0], offset
        raise InvalidInstance(
            "parse", f"element {_tag_text(tag)} at byte {offset} has an invalid VR {vr!r}"
        )

    def _check_fits(self, tag: int, offset: int, length: int, limit: int | None) -> None:
        end = self.pos + length
        if limit is not None and end > limit:
            raise InvalidInstance(
                "parse",
                f"element {_tag_text(tag)} at byte {offset} declares {length} bytes, "
                f"beyond the end of its enclosing item or sequence at byte {limit}",
            )
        if end > self.size:
            raise InvalidInstance(
                "truncated",
                f"element {_tag_text(tag)} at byte {offset} declares {length} bytes but the "
                f"file ends at byte {self.size} ({end - self.size} bytes missing)",
            )

    # -- structure -------------------------------------------------------
    def walk_file_meta(self) -> None:
        """Walk group 0002 (always explicit VR little endian), stop before the dataset."""
        if self.size - self.pos < 8:
            raise InvalidInstance("part10", "file has no file meta information after 'DICM'")
        while self.size - self.pos >= 8:
            if self.data is not None:
                self._plain_elements(self.size, top_level=False, meta=True)
                if self.size - self.pos < 8:
                    break
            start = self.pos
            if self.data is not None and start + 2 <= len(self.data):
                (group,) = struct.unpack_from("<H", self.data, start)
            else:
                (group,) = struct.unpack("<H", self.stream.read(2))
                self.stream.seek(start)
            if group != 0x0002:
                break
            tag, vr, length, offset = self._header(None)
            if length == UNDEFINED:
                raise InvalidInstance("part10", f"file meta element {_tag_text(tag)} has undefined length")
            self._element_value(tag, vr, length, offset, None, top_level=True)
        if TRANSFER_SYNTAX_UID not in self.captured and self.pos == PREAMBLE_LENGTH + 4:
            raise InvalidInstance("part10", "file meta information (group 0002) is missing")

    def walk_dataset(self) -> None:
        self._dataset(limit=None, depth=0, top_level=True)

    def _dataset(self, limit: int | None, depth: int, top_level: bool = False) -> None:
        """Walk elements until ``limit`` (defined length), an item delimiter, or EOF."""
        while True:
            end = self.size if limit is None else limit
            if self.data is not None and not self.implicit:
                self._plain_elements(end, top_level)
            if self.pos >= end:
                if limit is None and not top_level:
                    raise InvalidInstance(
                        "truncated", "file ends inside an item of undefined length (no item delimiter)"
                    )
                return
            if top_level and end - self.pos < 8:
                raise InvalidInstance(
                    "truncated",
                    f"file ends with {end - self.pos} stray bytes at byte {self.pos}, "
                    "too few for an element header",
                )
            tag, vr, length, offset = self._header(limit)
            if tag == ITEM_END and not top_level and limit is None:
                return
            if tag in (ITEM, ITEM_END, SEQUENCE_END):
                raise InvalidInstance(
                    "parse", f"unexpected item or delimiter tag {_tag_text(tag)} at byte {offset}"
                )
            self._element_value(tag, vr, length, offset, limit, top_level, depth)
            if top_level:
                self.elements.append((tag, offset, self.pos))

    def _plain_elements(self, end: int, top_level: bool, meta: bool = False) -> None:
        """Step over explicit-VR elements of defined length (sequences aside), from the bytes in memory.

        Most elements of a header are such: this loop does for them what :meth:`_header`,
        :meth:`_check_fits` and :meth:`_skip` would, without a call or a read per element; a
        value beyond the bytes in memory (the pixel data after a file's head) is stepped over
        too when its header is in memory. Values to capture are captured from those bytes, as
        :meth:`_element_value` does. It stops at the first element it cannot decide alone
        (another VR, an item, a value too long to capture or not in memory, one that does not
        fit), leaving it, and every verdict, to the general walk. ``meta``: the elements of
        group 0002 (:meth:`walk_file_meta`), up to the first of another group.
        """
        data, pos = self.data, self.pos
        if data is None:
            return
        limit = min(end, self.size)
        stop = min(limit, len(data))  # element headers are read from memory
        unpack_tag, unpack_short = self.tag_struct.unpack_from, self.short_struct.unpack_from
        unpack_long = self.long_struct.unpack_from
        capture = self.capture if top_level or meta else ()
        elements = self.elements
        while pos + 8 <= stop:
            group, element = unpack_tag(data, pos)
            if group == 0xFFFE or meta and group != 0x0002:
                break
            vr = data[pos + 4:pos + 6]
            if vr in SHORT_VRS:
                value_start = pos + 8
                value_end = value_start + unpack_short(data, pos + 6)[0]
            elif vr in LONG_VRS and vr != b"SQ" and pos + 12 <= stop:
                length = unpack_long(data, pos + 8)[0]
                if length == UNDEFINED:
                    break
                value_start = pos + 12
                value_end = value_start + length
            else:
                break
            tag = (group << 16) | element
            if value_end > limit:
                break
            if tag in capture:
                if value_end - value_start > MAX_CAPTURED_VALUE or value_end > stop:
                    break
                self.captured[tag] = Captured(
                    tag, vr.decode("ascii"), value_end - value_start, data[value_start:value_end], value_start,
                    False, self.endian == "<", True, False)
            if top_level:
                elements.append((tag, pos, value_end))
            pos = value_end
        if pos != self.pos:
            self.pos = pos
            self.stream.seek(pos)

    def _element_value(self, tag: int, vr: bytes | None, length: int, offset: int,
                       limit: int | None, top_level: bool, depth: int = 0) -> None:
        if vr is None and self.implicit:
            vr = _implicit_vr(tag)
        if length == UNDEFINED:
            if vr == b"SQ" or (vr in (b"UN", None) and tag not in PIXEL_TAGS):
                # UN (or an unknown implicit-VR tag) of undefined length is a sequence
                # in implicit VR little endian (PS3.5 6.2.2)
                saved = (self.implicit, self.endian)
                if vr == b"UN":
                    self.implicit, self.endian = True, "<"
                try:
                    self._sequence(None, depth + 1)
                finally:
                    self.implicit, self.endian = saved
            elif vr in (b"OB", b"OW", b"UN", None):
                self._fragments(tag, offset)
            else:
                raise InvalidInstance(
                    "parse", f"element {_tag_text(tag)} at byte {offset} ({(vr or b'').decode()}) has undefined length"
                )
            return
        self._check_fits(tag, offset, length, limit)
        if vr == b"SQ":
            self._sequence(self.pos + length, depth + 1)
        elif top_level and tag in self.capture:
            if length > MAX_CAPTURED_VALUE:
                raise InvalidInstance(
                    "parse", f"element {_tag_text(tag)} at byte {offset} is implausibly long ({length} bytes)"
                )
            value_offset = self.pos
            value = self._read(length, f"the value of element {_tag_text(tag)}")
            self.captured[tag] = Captured(
                tag, None if self.implicit or vr is None else vr.decode("ascii"), length, value,
                value_offset, self.implicit, self.endian == "<", True, False
            )
        else:
            self._skip(length)

    def _sequence(self, limit: int | None, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise InvalidInstance(
                "parse", f"sequences nested deeper than {MAX_DEPTH} levels at byte {self.pos}")
        while True:
            if limit is not None and self.pos >= limit:
                return
            if limit is None and self.pos >= self.size:
                raise InvalidInstance(
                    "truncated", "file ends inside a sequence of undefined length (no sequence delimiter)"
                )
            tag, _, length, offset = self._header(limit)
            if tag == SEQUENCE_END and limit is None:
                return
            if tag != ITEM:
                raise InvalidInstance(
                    "parse", f"expected a sequence item at byte {offset}, found tag {_tag_text(tag)}"
                )
            if length == UNDEFINED:
                self._dataset(None, depth)
            else:
                self._check_fits(tag, offset, length, limit)
                self._dataset(self.pos + length, depth)

    def _fragments(self, tag: int, offset: int) -> None:
        """Encapsulated pixel data: defined-length items up to a sequence delimiter."""
        while True:
            if self.pos >= self.size:
                raise InvalidInstance(
                    "truncated",
                    f"encapsulated element {_tag_text(tag)} at byte {offset} has no sequence delimiter "
                    "before the end of the file",
                )
            item, _, length, item_offset = self._header(None)
            if item == SEQUENCE_END:
                return
            if item != ITEM or length == UNDEFINED:
                raise InvalidInstance(
                    "parse", f"bad fragment item {_tag_text(item)} at byte {item_offset} "
                    f"in encapsulated element {_tag_text(tag)}"
                )
            self._check_fits(item, item_offset, length, None)
            self._skip(length)


@functools.lru_cache(maxsize=4096)
def _implicit_vr(tag: int) -> bytes | None:
    from pydicom.datadict import dictionary_VR

    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return None
    return b"SQ" if vr == "SQ" else vr.split(" or ")[0].encode("ascii")[:2]


def open_for_validation(stream: BinaryIO, size: int, in_memory_limit: int = 1 << 20) -> BinaryIO:
    """Return a stream to validate: small files are read at once, large ones read lazily."""
    if size <= in_memory_limit:
        return io.BytesIO(stream.read(size + 1))
    return stream


def read_head(stream: BinaryIO, length: int) -> bytes:
    """The first ``length`` bytes of ``stream`` (fewer if it is shorter), the stream put back
    at its start: to pass as ``head`` to :func:`validate_part10`."""
    head = stream.read(length)
    stream.seek(0)
    return head
