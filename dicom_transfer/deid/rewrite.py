"""Rewrite one DICOM Part 10 file under the profile, with pixel data copied as bytes.

The project's own walker (:func:`dicom_transfer.part10.map_elements`) says where each
top-level element is. Only the elements the profile may change are parsed, by pydicom, and
written anew; every other element, the pixel data included, is copied from the source as the
bytes it is (:mod:`dicom_transfer.deid.encoding`: in the kernel between local files), so the
pixel data is never loaded and memory stays bounded whatever the instance's size. The transfer
syntax is unchanged. Deflated datasets (where offsets in the file mean nothing) go through
pydicom whole.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import io
import re
import struct
from collections.abc import Set as AbstractSet
from functools import lru_cache
from typing import BinaryIO, NamedTuple

from pydicom import dcmread
from pydicom.config import IGNORE
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO, DicomFileLike
from pydicom.filereader import read_dataset
from pydicom.filewriter import dcmwrite, write_data_element, write_dataset, write_file_meta_info
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID as PydicomUID
from pydicom.uid import ExplicitVRLittleEndian, UID_dictionary

from dicom_transfer.deid.encoding import (
    _PRINTABLE,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    TEXT_VRS,
    HeaderReader,
    copy_range,
    element_header,
    encode_simple,
    file_meta_bytes,
)
from dicom_transfer.deid.profile import CLEAN, DUMMY, KEEP, REMOVE, UID, UIDS_INSIDE, ZERO, Profile
from dicom_transfer.deid.pseudonyms import Pseudonyms
from dicom_transfer.part10 import (
    DEFLATED,
    EXPLICIT_VR_BE,
    IMPLICIT_VR_LE,
    PIXEL_TAGS,
    SERIES_UID,
    SOP_UID,
    STUDY_UID,
    map_elements,
)

DEFER_SIZE = 1 << 20  # header values larger than this stay in the file until written
DUMMY_TEXT = "ANONYMIZED"
FREE_TEXT_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})
DUMMIES = {"DA": "19000101", "TM": "000000", "DT": "19000101000000", "AS": "000D", "DS": "0", "IS": "0",
           "UR": "", "US": 0, "SS": 0, "UL": 0, "SL": 0, "FL": 0.0, "FD": 0.0, "SV": 0, "UV": 0, "AT": 0}
BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})
# UI attributes that name a definition (a class, a syntax, a coding scheme...), not an instance:
# their values are kept even when they are not in pydicom's list of well-known UIDs.
DEFINITION_UID_SUFFIXES = ("ClassUID", "SyntaxUID", "SchemeUID", "ResourceUID", "CreatorUID",
                           "OrganizationUID", "ContextUID", "VersionUID")

PATIENT_ID, PATIENT_NAME, BURNED_IN, SOP_CLASS, MODALITY = 0x00100020, 0x00100010, 0x00280301, 0x00080016, 0x00080060
MAX_HEADER_BYTES = 64 << 20  # beyond this (without pixel data), pydicom reads the header lazily
RAW, PARSE, DROP = "raw", "parse", "drop"
REMOVED, KEPT = object(), object()  # what the byte path does with an element instead of a new value
RETURNED_TAGS = frozenset({0x00080016, 0x00080018, 0x0020000D, 0x0020000E})  # what rewrite() reads of the header
MARK_TAGS = frozenset({0x00120062, 0x00120063, 0x00120064, 0x00280303})  # what _marks writes
_LONG_VRS = frozenset(vr.encode("ascii") for vr in ("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN",
                                                     "UR", "UT", "UV"))
# VRs the byte path handles (not SQ, nor UN, whose value pydicom may read as another VR)
_PLAIN_VRS = frozenset(vr.encode("ascii") for vr in ("AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO",
                                                      "LT", "OB", "OD", "OF", "OL", "OV", "OW", "PN", "SH", "SL", "SS",
                                                      "ST", "SV", "TM", "UC", "UI", "UL", "UR", "US", "UT", "UV"))
SPECIFIC_CHARACTER_SET = 0x00080005
_PLAIN = re.compile(rb"[ -~]*\x00?")  # printable ASCII (decoded alike under any character set), a NUL to pad
# Parsed whatever their action: what the checks read, and what the rewrite itself writes.
WANTED_TAGS = frozenset({PATIENT_ID, PATIENT_NAME, BURNED_IN, 0x00080005, 0x00080016, 0x00080018, 0x00080060,
                         0x0020000D, 0x0020000E, 0x00120062, 0x00120063, 0x00120064, 0x00280303})
# Instances that carry identifying text in their pixels (or are documents) unless they say otherwise.
BURNED_IN_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.7.1": "Multi-frame Single Bit Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.6.1": "Ultrasound",
    "1.2.840.10008.5.1.4.1.1.6.2": "Enhanced US Volume",
    "1.2.840.10008.5.1.4.1.1.3.1": "Ultrasound Multi-frame",
    "1.2.840.10008.5.1.4.1.1.104.1": "Encapsulated PDF",
    "1.2.840.10008.5.1.4.1.1.104.2": "Encapsulated CDA",
}
BURNED_IN_MODALITIES = frozenset({"US", "OT", "DOC"})


class DeidentificationError(ValueError):
    """The instance cannot be de-identified. The message names tags, never values."""


class _ElementFailure(Exception):
    """pydicom failed on one header element: its tag (the innermost one, for a nested element)
    and the error, for the message :meth:`Deidentifier.rewrite` gives."""

    def __init__(self, tag: int, error: Exception) -> None:
        super().__init__(tag, error)
        self.tag, self.error = tag, error


@dataclasses.dataclass
class Rewritten:
    """What the rewrite produced: the new identity, the layout attributes and the mapping."""

    study_uid: str
    series_uid: str
    sop_uid: str
    transfer_syntax: str
    size: int
    attributes: dict[str, object]
    mapping: dict[tuple[str, str], tuple[str, str]]  # (kind, original) -> (pseudonym, keyword)
    # The first bytes written (the header, up to the pixel data's value), when they were made in
    # memory: what a check of the output reads instead of reading them back. Empty otherwise.
    head: bytes = b""


class Deidentifier:
    """Applies ``profile`` with the replacements of ``pseudonyms`` to Part 10 files.

    Example::

        deidentifier = Deidentifier(Profile(ProfileOptions()), Pseudonyms(key))
        with open("in.dcm", "rb") as source, open("out.dcm", "wb") as out:
            result = deidentifier.rewrite(source, os.path.getsize("in.dcm"), out)
    """

    def __init__(self, profile: Profile, pseudonyms: Pseudonyms, allow_burned_in: bool = False) -> None:
        self.profile = profile
        self.pseudonyms = pseudonyms
        self.allow_burned_in = allow_burned_in
        options = profile.options
        self.cleans_text = (options.clean_descriptors or options.clean_structured_content
                            or options.retain_device_identity or options.retain_patient_characteristics)
        self.marks = _marks(profile)
        # Options under which every element's new bytes follow from its own bytes: the byte path.
        self.by_bytes = not (self.cleans_text or options.retain_longitudinal_modified_dates
                             or options.retain_safe_private)
        self._encoded_marks: dict[tuple[bool, bool], list[tuple[int, int, int, bytes]]] = {}

    def new_uid(self, original: str) -> str:
        """The UID a rewrite gives the study, series or instance UID ``original`` (computed from the
        key alone: what a destination holds can be compared with a source without a mapping table)."""
        return original if self.profile.options.retain_uids else self.pseudonyms.uid(original)

    def rewrite(self, source: BinaryIO, size: int, out: BinaryIO, keywords: tuple[str, ...] = (),
                mapped: tuple[str, list[tuple[int, int, int]] | None] | None = None,
                head: bytes = b"") -> Rewritten:
        """De-identify the file in ``source`` (``size`` bytes, seekable) into ``out``.

        ``keywords``: attributes to return (as de-identified) for an output layout. ``mapped``:
        what :func:`~dicom_transfer.part10.map_elements` gives for this file, when the walk that
        validated it found it already (the file is then not walked again); ``head``: the file's
        first bytes, when they are in memory already (not read again).

        Raises
        ------
        dicom_transfer.part10.InvalidInstance
            The file is not a well-formed instance.
        DeidentificationError
            Burned-in annotation (unless allowed), or a header pydicom cannot decode.
        """
        transfer_syntax, elements = mapped or map_elements(source, size)
        asked = {t for t in map(tag_for_keyword, keywords) if t is not None}
        wanted, returned = (WANTED_TAGS | asked, RETURNED_TAGS | asked) if asked else (WANTED_TAGS, RETURNED_TAGS)
        header: Dataset | dict
        try:
            written = b""
            if elements is None or sum(e - s for t, s, e in elements if t not in PIXEL_TAGS) > MAX_HEADER_BYTES:
                header, mapping = self._rewrite_with_pydicom(source, size, out, transfer_syntax, elements)
            else:
                done = self._splice_bytes(source, out, transfer_syntax, elements, wanted, returned, head) \
                    if self.by_bytes else None
                if done is not None:
                    header, mapping, written = done
                else:
                    header, mapping = self._splice(source, out, transfer_syntax, elements, wanted, head)
            attributes = {k: header[k].value for k in keywords if k in header}
            return Rewritten(str(header[STUDY_UID].value), str(header[SERIES_UID].value),
                             str(header[SOP_UID].value), transfer_syntax, out.tell(), attributes, mapping, written)
        except DeidentificationError:
            raise
        except _ElementFailure as failure:
            raise DeidentificationError(f"cannot de-identify the header at {_tag_text(failure.tag)} "
                                        f"({type(failure.error).__name__})") from None
        except (InvalidDicomError, ValueError, KeyError, TypeError, EOFError, AttributeError, OverflowError,
                struct.error) as exc:
            raise DeidentificationError(f"cannot de-identify the header ({type(exc).__name__})") from None

    def _splice(self, source: BinaryIO, out: BinaryIO, transfer_syntax: str, elements: list[tuple[int, int, int]],
                wanted: AbstractSet[int], head: bytes = b"") -> tuple[Dataset, dict]:
        """Parse only the elements the profile may change; copy the others, pixel data included, as bytes."""
        implicit, little = transfer_syntax == IMPLICIT_VR_LE, transfer_syntax != EXPLICIT_VR_BE
        kept: list[tuple[int, int, int, bytes | None]] = []  # (tag, start, end, bytes; None: copy from source)
        to_parse = []
        original: dict[int, bytes] = {}  # the parsed elements' bytes, written again if they do not change
        read = HeaderReader(source, elements, head)
        for tag, start, end in elements:
            if tag in PIXEL_TAGS:
                kept.append((tag, start, end, None))
                continue
            data = read(start, end)
            how = self._plan(tag, data, implicit, wanted)
            if how == RAW:
                kept.append((tag, start, end, data))
            elif how == PARSE:
                to_parse.append(data)
                original[tag] = data
        buffer = b"".join(to_parse)
        header = read_dataset(io.BytesIO(buffer), implicit, little, bytelength=len(buffer))
        self._check_burned_in(header)
        instance = _Instance(self, header)
        instance.apply(header, top_level=True)
        marks = self._marks_encoded(implicit, little)  # the same in every instance: encoded once
        for tag, *_ in marks:
            if tag in header:
                del header[tag]
        out.write(file_meta_bytes(header.SOPClassUID, header.SOPInstanceUID, transfer_syntax))
        stream = DicomFileLike(out)
        stream.is_little_endian, stream.is_implicit_VR = little, implicit
        encoding = header.get("SpecificCharacterSet", "iso8859")
        parsed = [(int(tag), 0, 0, b"") for tag in header.keys()]  # noqa: SIM118 - tags
        for tag, start, end, given in sorted([*kept, *parsed, *marks], key=lambda e: e[0]):
            if given is None:
                copy_range(source, out, start, end)
            elif given:
                out.write(given)
            else:
                element = header.get_item(tag)
                if isinstance(element, RawDataElement) and element.length != 0xFFFFFFFF and tag in original:
                    out.write(original[tag])  # what pydicom writes for an element it did not convert
                    continue
                encoded = encode_simple(element, implicit, little)
                if encoded is None:
                    write_data_element(stream, element, encoding)
                else:
                    out.write(encoded)
        instance.mark(header)
        return header, instance.mapping

    def _splice_bytes(self, source: BinaryIO, out: BinaryIO, transfer_syntax: str,
                      elements: list[tuple[int, int, int]], wanted: AbstractSet[int],
                      returned: AbstractSet[int], head: bytes = b"") -> tuple[Dataset | dict, dict, bytes] | None:
        """What :meth:`_splice` writes, made from the elements' bytes without a pydicom dataset walk,
        for explicit or implicit VR little endian headers of plain ASCII values and no sequence to
        look into (the usual case); ``None``, with nothing written, for anything else (then
        :meth:`_splice`). Also returns the output's first bytes (see :attr:`Rewritten.head`)."""
        if transfer_syntax not in (ExplicitVRLittleEndian, IMPLICIT_VR_LE) or not elements:
            return None
        implicit = transfer_syntax == IMPLICIT_VR_LE
        read = HeaderReader(source, elements, head)
        try:
            splice = _ByteSplice(self, read, elements, wanted, returned, implicit)
        except _Unusual:
            return None
        if not self.allow_burned_in:
            texts = splice.texts
            self._refuse_burned_in(texts.get(BURNED_IN, ""), texts.get(SOP_CLASS, ""), texts.get(MODALITY, ""))
        identity = splice.identity() if returned is RETURNED_TAGS else None  # the new UIDs alone: no dataset
        header: Dataset | dict
        if identity is not None:
            header, sop_instance = identity, identity[SOP_UID].value
        else:
            dataset = splice.dataset()
            for element in self.marks:
                dataset[element.tag] = element
            header, sop_instance = dataset, dataset.SOPInstanceUID
        pending = [file_meta_bytes(splice.sop_class, sop_instance, transfer_syntax)]
        written = b""  # the bytes before the first copied value
        value_offset = 8 if implicit else 12  # the header of a pixel data element (a long VR in explicit VR)
        for _, start, end, data in sorted([*splice.parts, *self._marks_encoded(implicit, True)],
                                          key=lambda e: e[0]):
            if data is not None:
                pending.append(data)
                continue
            lead = read.in_memory(start, min(end, start + value_offset))  # the element's header, if in memory
            pending.append(lead)
            chunk = b"".join(pending)
            out.write(chunk)
            pending = []
            if not written:
                written = chunk
            copy_range(source, out, start + len(lead), end)
        chunk = b"".join(pending)
        out.write(chunk)
        return header, splice.mapping, written or chunk

    def _marks_encoded(self, implicit: bool, little: bool) -> list[tuple[int, int, int, bytes]]:
        """The marks (:func:`_marks`) as written in a dataset of this encoding."""
        found = self._encoded_marks.get((implicit, little))
        if found is None:
            found = []
            for element in self.marks:
                buffer = DicomBytesIO()
                buffer.is_little_endian, buffer.is_implicit_VR = little, implicit
                write_data_element(buffer, element)
                found.append((int(element.tag), 0, 0, buffer.getvalue()))
            self._encoded_marks[(implicit, little)] = found
        return found

    def _plan(self, tag: int, data: bytes, implicit: bool, wanted: AbstractSet[int]) -> str:
        """Whether an element is copied as it is, parsed (it may change), or dropped."""
        group, element = tag >> 16, tag & 0xFFFF
        if group & 1:
            return PARSE if self.profile.options.retain_safe_private else DROP
        if element == 0 or group == 0x0002:
            return DROP
        action = self.profile.action(tag)
        if tag in wanted:
            return PARSE
        if action == REMOVE:
            return PARSE if self.cleans_text else DROP  # cleaning looks for removed values in kept text
        if action not in (None, KEEP):
            return PARSE
        vr = _vr_of(None if implicit else data[4:6].decode("ascii", "replace"), tag)
        return PARSE if vr in ("SQ", "UI", "UN") else RAW

    def _rewrite_with_pydicom(self, source: BinaryIO, size: int, out: BinaryIO, transfer_syntax: str,
                              elements: list[tuple[int, int, int]] | None) -> tuple[Dataset, dict]:
        """Deflated datasets (and headers too large to hold): pydicom reads and writes the header,
        large values stay in the file until written, pixel data is still copied as bytes."""
        pixels = [(s, e) for t, s, e in elements or () if t in PIXEL_TAGS]
        span = (pixels[0][0], pixels[-1][1]) if pixels else None
        source.seek(0)
        header = dcmread(source, stop_before_pixels=span is not None, defer_size=DEFER_SIZE)
        tail = self._read_tail(source, size, span, transfer_syntax)
        self._check_burned_in(header)
        instance = _Instance(self, header)
        instance.apply(header, top_level=True)
        if tail is not None:
            instance.apply(tail, top_level=False)
        instance.mark(header)
        _write_header(out, self._file_meta(header, transfer_syntax), header, transfer_syntax)
        if span is not None:
            copy_range(source, out, *span)
        if tail is not None and len(tail):
            _write_tail(out, tail, transfer_syntax)
        return header, instance.mapping

    @staticmethod
    def _read_tail(source: BinaryIO, size: int, span: tuple[int, int] | None,
                   transfer_syntax: str) -> Dataset | None:
        """The elements after the pixel data (padding, signatures; usually none)."""
        if span is None or span[1] >= size:
            return None
        source.seek(span[1])
        return read_dataset(source, transfer_syntax == IMPLICIT_VR_LE, transfer_syntax != EXPLICIT_VR_BE,
                            bytelength=size - span[1], defer_size=DEFER_SIZE)

    def _check_burned_in(self, header: Dataset) -> None:
        if not self.allow_burned_in:
            self._refuse_burned_in(_text(header, BURNED_IN), _text(header, SOP_CLASS), _text(header, MODALITY))

    @staticmethod
    def _refuse_burned_in(flag: str, sop_class: str, modality: str) -> None:
        """Raise if the pixel data may carry identifying text (the three attributes as :func:`_text` gives them)."""
        flag = flag.strip().upper()
        if flag == "YES":
            raise DeidentificationError("BurnedInAnnotation is YES: the pixel data carries identifying text "
                                        "(use --allow-burned-in to pass it through unchanged)")
        if flag == "NO":
            return
        sop_class = sop_class.rstrip("\0 ")
        modality = modality.strip().upper()
        kind = BURNED_IN_SOP_CLASSES.get(sop_class) or (f"modality {modality}" if modality in BURNED_IN_MODALITIES
                                                         else None)
        if kind:
            raise DeidentificationError(f"{kind} instance without BurnedInAnnotation NO: its pixel data may carry "
                                        "identifying text (use --allow-burned-in to pass it through unchanged)")

    @staticmethod
    def _file_meta(header: Dataset, transfer_syntax: str) -> FileMetaDataset:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = header.SOPClassUID
        meta.MediaStorageSOPInstanceUID = header.SOPInstanceUID  # already replaced
        meta.TransferSyntaxUID = PydicomUID(transfer_syntax)
        meta.ImplementationClassUID = PydicomUID(IMPLEMENTATION_CLASS_UID)
        meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
        return meta


class _Instance:
    """The rewrite of one instance: its original patient, the mapping it produced."""

    def __init__(self, deidentifier: Deidentifier, header: Dataset) -> None:
        self.profile = deidentifier.profile
        self.pseudonyms = deidentifier.pseudonyms
        self.options = self.profile.options
        self.mapping: dict[tuple[str, str], tuple[str, str]] = {}
        self.patient_id = str(header.get("PatientID", "") or "").strip()
        self.offset: _dt.timedelta | None = None
        if self.options.retain_longitudinal_modified_dates:
            self.offset = _dt.timedelta(days=self.pseudonyms.date_offset_days(self.patient_id))
        self.terms = _identifying_terms(header, self.profile) if deidentifier.cleans_text else None
        self.marks = deidentifier.marks

    # -- replacements ----------------------------------------------------------------------------
    def uid(self, original: str, keyword: str) -> str:
        new = self.pseudonyms.uid(original)
        self.mapping.setdefault(("UID", original), (new, keyword))
        return new

    def pseudonymous_patient_id(self, original: str) -> str:
        new = self.pseudonyms.patient_id(original)
        self.mapping.setdefault(("PatientID", original), (new, "PatientID"))
        return new

    # -- the walk --------------------------------------------------------------------------------
    def apply(self, dataset: Dataset, top_level: bool, dummy_text: bool = False) -> None:
        """Apply the profile to every element of ``dataset`` and of its sequences."""
        private = [int(tag) for tag in dataset.keys() if (tag >> 16) & 1]  # noqa: SIM118 - tags, not elements
        for tag in [int(tag) for tag in dataset.keys()]:  # noqa: SIM118
            if (tag >> 16) & 1:
                continue
            if tag & 0xFFFF == 0 or tag >> 16 == 0x0002:  # group lengths would be wrong after the rewrite
                del dataset[tag]
                continue
            self._element(dataset, tag, top_level, dummy_text)
        self._private(dataset, private)

    def _element(self, dataset: Dataset, tag: int, top_level: bool, dummy_text: bool) -> None:
        try:
            self._apply_action(dataset, tag, top_level, dummy_text)
        except (DeidentificationError, _ElementFailure):
            raise  # a verdict, or a failure already located in a nested element
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
            raise _ElementFailure(tag, exc) from exc

    def _apply_action(self, dataset: Dataset, tag: int, top_level: bool, dummy_text: bool) -> None:
        raw = dataset.get_item(tag)
        vr = _vr_of(raw.VR, tag)
        if tag == PATIENT_ID:
            self._set(dataset, tag, vr, self.pseudonymous_patient_id(str(dataset[tag].value or "").strip()))
            return
        if tag == PATIENT_NAME and top_level:
            self._set(dataset, tag, vr, self.pseudonymous_patient_id(self.patient_id))
            return
        action = self.profile.action(tag)
        if action is None:
            action = self._unlisted(dataset, tag, vr, dummy_text)
        if action == REMOVE:
            del dataset[tag]
        elif action == ZERO:
            self._set(dataset, tag, vr, Sequence([]) if vr == "SQ" else None)
        elif action == DUMMY:
            if vr == "SQ":  # dummy content: the items' text replaced, everything else as the profile says
                self._items(dataset, tag, dummy_text=True)
            elif vr == "UI":
                self._replace_uids(dataset, tag)
            else:
                self._set(dataset, tag, vr, _dummy(vr))
        elif action == UID:
            self._replace_uids(dataset, tag)
        elif action == CLEAN:
            self._clean(dataset, tag, vr, dummy_text)
        elif action in (KEEP, UIDS_INSIDE) and vr == "SQ":
            self._items(dataset, tag, dummy_text)

    def _unlisted(self, dataset: Dataset, tag: int, vr: str, dummy_text: bool) -> str | None:
        """Attributes the table does not list are kept, except instance UIDs it does not name
        (all are replaced, so that no original UID survives) and, in dummy content, text."""
        if vr == "SQ":
            return KEEP
        if vr == "UI" and not self.options.retain_uids:
            keyword = keyword_for_tag(tag) or ""
            if not keyword.endswith(DEFINITION_UID_SUFFIXES):
                values = _values(dataset[tag].value)
                if any(str(v) not in UID_dictionary for v in values if v):
                    return UID
        if dummy_text and vr in FREE_TEXT_VRS | {"DA", "DT", "TM"}:
            return DUMMY
        return None

    def _items(self, dataset: Dataset, tag: int, dummy_text: bool) -> None:
        for item in dataset[tag].value:
            self.apply(item, top_level=False, dummy_text=dummy_text)

    def _replace_uids(self, dataset: Dataset, tag: int) -> None:
        keyword = _keyword(tag)
        element = dataset.get_item(tag)
        if element.is_raw and element.VR == "UI" and isinstance(element.value, bytes):
            # what pydicom's conversion would give, without it: text without trailing NULs and spaces
            text = element.value.decode("latin-1").rstrip("\0 ")
            originals = text.split("\\") if "\\" in text else [text] if text else []
            values = [self.uid(v, keyword) if v else v for v in originals]
            value = values if len(values) > 1 else (values[0] if values else "")
            dataset[tag] = DataElement(tag, "UI", value, validation_mode=IGNORE)  # pseudonyms are valid UIDs
            return
        element = dataset[tag]
        values = [self.uid(str(v), keyword) if v else v for v in _values(element.value)]
        element.value = values if len(values) > 1 else (values[0] if values else "")

    def _clean(self, dataset: Dataset, tag: int, vr: str, dummy_text: bool) -> None:
        """C: dates move by the patient's offset; text loses the instance's identifying values;
        sequences are kept with the profile applied inside; times and numbers are kept."""
        if vr == "SQ":
            self._items(dataset, tag, dummy_text)
            return
        element = dataset[tag]
        if vr in ("DA", "DT") and self.offset is not None:
            element.value = [_shift(str(v), self.offset) for v in _values(element.value)] if element.VM > 1 \
                else _shift(str(element.value or ""), self.offset)
        elif vr in FREE_TEXT_VRS | {"AE", "CS"} and self.terms:
            if element.VM > 1:
                element.value = [self.terms.sub("*", str(v)) for v in element.value]
            elif element.value:
                element.value = self.terms.sub("*", str(element.value))

    def _private(self, dataset: Dataset, tags: list[int]) -> None:
        """Private attributes are removed, except those of the safe-private list (and their creators)."""
        safe = self.options.retain_safe_private
        kept_blocks = set()
        for tag in tags:
            group, element = tag >> 16, tag & 0xFFFF
            if 0x0010 <= element <= 0x00FF:
                continue
            creator_tag = (group << 16) | (element >> 8)
            creator = str(dataset[creator_tag].value).strip() if element >= 0x1000 and creator_tag in dataset else None
            if safe and creator is not None and (group, creator, element & 0xFF) in safe:
                kept_blocks.add(creator_tag)
                if _vr_of(dataset.get_item(tag).VR, tag) == "SQ":
                    self._items(dataset, tag, dummy_text=False)
            else:
                del dataset[tag]
        for tag in tags:
            if 0x0010 <= tag & 0xFFFF <= 0x00FF and tag not in kept_blocks:
                del dataset[tag]

    @staticmethod
    def _set(dataset: Dataset, tag: int, vr: str, value: object) -> None:
        dataset[tag] = DataElement(tag, vr, value, validation_mode=IGNORE)  # dummies and pseudonyms: valid

    def mark(self, header: Dataset) -> None:
        """PS3.15 E.1.1: say that the identity was removed, how, and what became of the dates."""
        for element in self.marks:
            header[element.tag] = element


class _Unusual(Exception):
    """An element the byte path leaves to the dataset walk."""


class _Value(NamedTuple):
    """An element's value where a data element is not needed (see :meth:`_ByteSplice.identity`)."""

    value: str


class _ByteSplice:
    """The elements of an explicit VR little endian header as :meth:`Deidentifier._splice` writes
    them, made from their bytes: each element's action and new bytes are those the dataset walk
    (:class:`_Instance`) gives it (the same pseudonyms, dummies and :func:`encode_simple`
    encodings), and a kept element is copied as it is only where pydicom would write the same
    bytes again. Raises :class:`_Unusual` for anything else: a sequence, a value that is not
    plain ASCII, a cleaned attribute, a dummy :func:`encode_simple` does not write... Tests
    compare both paths on a varied corpus.
    """

    def __init__(self, deidentifier: Deidentifier, read: HeaderReader, elements: list[tuple[int, int, int]],
                 wanted: AbstractSet[int], returned: AbstractSet[int], implicit: bool = False) -> None:
        self.implicit = implicit
        self.profile = deidentifier.profile
        self.pseudonyms = deidentifier.pseudonyms
        self.retain_uids = self.profile.options.retain_uids
        self.read = read
        self.wanted = wanted
        self.returned = returned  # the elements of the returned header (not every parsed one)
        self.mapping: dict[tuple[str, str], tuple[str, str]] = {}
        self.parts: list[tuple[int, int, int, bytes | None]] = []  # (tag, start, end, bytes; None: copy)
        # those returned, as the walk leaves them: kept as they are, or (tag, VR, new value)
        self.header: list[RawDataElement | tuple[int, str, object]] = []
        self.texts: dict[int, str] = {}  # what the burned-in check reads
        self.patient_id = ""
        for tag, start, end in elements:
            if tag == PATIENT_ID:
                self.patient_id = self._patient_id(self._split(tag, read(start, end))[3])
        previous = -1
        for tag, start, end in elements:
            if tag <= previous:
                raise _Unusual  # out of order or repeated: the dataset decides which one stays
            previous = tag
            self._element(tag, start, end)

    def dataset(self) -> Dataset:
        """The returned elements, as the dataset walk leaves them."""
        return Dataset({element.tag: element for element in (
            e if isinstance(e, RawDataElement) else DataElement(*e, validation_mode=IGNORE) for e in self.header)})

    def identity(self) -> dict[int, _Value] | None:
        """The Study, Series and SOP Instance UIDs as the dataset would give them, without making
        it: where each was replaced by one new UID (a text); else ``None``."""
        found = {tag: _Value(value) for tag, _, value in (e for e in self.header if not isinstance(e, RawDataElement))
                 if tag in (STUDY_UID, SERIES_UID, SOP_UID) and isinstance(value, str)}
        return found if len(found) == 3 else None

    def _split(self, tag: int, data: bytes) -> tuple[str, int, int, bytes]:
        """VR, length, offset of the value and value of one element's bytes (in implicit VR, the VR
        pydicom gives the tag: that of the dictionary)."""
        if self.implicit:
            vr = _implicit_vr(tag)
            length = struct.unpack_from("<L", data, 4)[0]
            if length == 0xFFFFFFFF or vr not in _PLAIN_VRS:
                raise _Unusual
            return vr.decode("ascii"), length, 8, data[8:]
        vr = data[4:6]
        if vr in _LONG_VRS:
            length, offset = struct.unpack_from("<L", data, 8)[0], 12
        else:
            length, offset = struct.unpack_from("<H", data, 6)[0], 8
        if length == 0xFFFFFFFF or vr not in _PLAIN_VRS:
            raise _Unusual
        return vr.decode("ascii"), length, offset, data[offset:]

    @staticmethod
    def _patient_id(value: bytes) -> str:
        """``str(header.get("PatientID", "") or "").strip()`` for a plain single value."""
        if not _PLAIN.fullmatch(value) or b"\\" in value:
            raise _Unusual
        return value.decode("ascii").rstrip("\0 ").strip()

    def _dropped(self, tag: int, start: int, end: int) -> bool:
        """Private attributes, group lengths, file meta elements and the marks' old values (a
        sequence there would be walked first: not here)."""
        group = tag >> 16
        if tag in MARK_TAGS and (_implicit_vr(tag) if self.implicit else self.read(start, end)[4:6]) not in (b"CS",
                                                                                                             b"LO"):
            raise _Unusual
        return tag in MARK_TAGS or bool(group & 1) or tag & 0xFFFF == 0 or group == 0x0002

    def _element(self, tag: int, start: int, end: int) -> None:
        if tag in PIXEL_TAGS:
            self.parts.append((tag, start, end, None))
            return
        if self._dropped(tag, start, end):
            return
        action = self.profile.action(tag)
        wanted = tag in self.wanted
        if not wanted and action == REMOVE:
            return
        data = self.read(start, end)
        if not wanted and action in (None, KEEP) and self._copied_as_it_is(tag, data):
            self.parts.append((tag, start, end, data))
            return
        vr, length, offset, value = self._split(tag, data)
        if not _PLAIN.fullmatch(value):
            raise _Unusual  # not plain ASCII text: pydicom decodes and encodes it
        if tag in (BURNED_IN, SOP_CLASS, MODALITY):
            self._remember_text(tag, vr, value)
        new = self._replacement(tag, vr, action, value)
        if new is REMOVED:
            return
        if new is KEPT:
            self.parts.append((tag, start, end, data))
            if tag in self.returned:
                self.header.append(RawDataElement(BaseTag(tag), vr, length, value, start + offset, self.implicit,
                                                  True))
            return
        if not (new is None or isinstance(new, (str, list))):  # the byte path holds text values only
            raise TypeError(f"no text value for {_tag_text(tag)}")
        self.parts.append((tag, start, end, _text_element(tag, vr, new, self.implicit)))
        if tag in self.returned:
            self.header.append((tag, vr, new))

    def _copied_as_it_is(self, tag: int, data: bytes) -> bool:
        """Whether the walk copies an element the profile keeps as it is: not a UID (which may be
        replaced), nor, in implicit VR (where the VR does not matter otherwise), a sequence or an
        element of unknown VR."""
        if self.implicit:
            return _keeps_implicit(tag)
        return self._split(tag, data)[0] != "UI"

    def _remember_text(self, tag: int, vr: str, value: bytes) -> None:
        """What :func:`_text` gives for an attribute the burned-in check reads."""
        text = value.decode("ascii")
        if "\\" in text:
            raise _Unusual
        self.texts[tag] = text.rstrip("\0 ") if vr == "UI" else text

    @property
    def sop_class(self) -> str:
        """The SOP Class UID as pydicom reads it (and the file meta writes it)."""
        if SOP_CLASS not in self.texts:
            raise _Unusual  # none: the walk refuses the instance
        return self.texts[SOP_CLASS]

    def _replacement(self, tag: int, vr: str, action: str | None, value: bytes) -> object:
        """The new value (:meth:`_Instance._apply_action`), or :data:`KEPT` or :data:`REMOVED`."""
        if tag in (PATIENT_ID, PATIENT_NAME):
            pseudonym = self.pseudonyms.patient_id(self.patient_id)
            self.mapping.setdefault(("PatientID", self.patient_id), (pseudonym, "PatientID"))
            return pseudonym
        if action == REMOVE:
            return REMOVED
        if action == ZERO:
            return None
        if vr == "UI" and (action in (DUMMY, UID) or action is None and not self.retain_uids
                           and _replaces_unlisted_uids(tag, value)):
            return self._new_uids(value, _keyword(tag))
        if action == DUMMY and vr in TEXT_VRS:
            return _dummy(vr)
        if action not in (None, KEEP, UIDS_INSIDE):
            raise _Unusual  # cleaned, or a dummy of another VR
        if (vr == "UI" or tag == SPECIFIC_CHARACTER_SET) and _canonical(value, vr) != value:
            raise _Unusual  # read and written again by pydicom: other bytes
        return KEPT

    def _new_uids(self, value: bytes, keyword: str) -> str | list[str]:
        """The value of a UI element whose UIDs are replaced (:meth:`_Instance._replace_uids`)."""
        text = value.decode("latin-1").rstrip("\0 ")
        values = []
        for original in text.split("\\") if text else []:
            if original:
                new = self.pseudonyms.uid(original)
                self.mapping.setdefault(("UID", original), (new, keyword))
                original = new
            values.append(original)
        return values if len(values) > 1 else (values[0] if values else "")


def _text_element(tag: int, vr: str, value: str | list[str] | None, implicit: bool = False) -> bytes:
    """What :func:`encode_simple` writes (explicit or implicit VR little endian) for
    ``DataElement(tag, vr, value)`` made by the walk: empty, or plain ASCII text (and a PN
    pseudonym, which pydicom writes alike); raise :class:`_Unusual` where it would answer ``None``."""
    if value is None or value == "":
        return element_header(tag, vr, 0, implicit, True)
    values = [value] if isinstance(value, str) else value
    if not (vr in TEXT_VRS or vr == "PN" and len(values) == 1 and values[0].isalnum()) \
            or not all(_PRINTABLE.fullmatch(v) for v in values):
        raise _Unusual
    data = "\\".join(values).encode("ascii")
    if len(data) % 2:
        data += b"\0" if vr == "UI" else b" "
    if not implicit and len(data) > 0xFFFF and vr.encode("ascii") not in _LONG_VRS:
        raise _Unusual
    return element_header(tag, vr, len(data), implicit, True) + data


@lru_cache(maxsize=4096)
def _implicit_vr(tag: int) -> bytes:
    """The VR pydicom reads an implicit VR element of ``tag`` with: the dictionary's (``b"??"`` for
    a tag it does not know, or one of several VRs: the byte path leaves those to the walk)."""
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return b"??"
    return vr.encode("ascii") if len(vr) == 2 else b"??"


@lru_cache(maxsize=4096)
def _keeps_implicit(tag: int) -> bool:
    """An implicit VR element the walk copies as it is when the profile keeps it (:meth:`Deidentifier._plan`):
    a known tag that is not a sequence, a UID or of unknown VR."""
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return False
    return vr.split(" or ")[0] not in ("SQ", "UI", "UN")


def _marks(profile: Profile) -> list[DataElement]:
    """PS3.15 E.1.1: that the identity was removed, how, and what became of the dates (made once,
    written into every instance)."""
    options = profile.options
    codes = []
    for value, meaning in profile.method_codes():
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, "DCM", meaning
        codes.append(code)
    method = f"DICOM PS3.15 {profile.edition} Basic Profile{' with options' if options.enabled() else ''}"
    dates = ("MODIFIED" if options.retain_longitudinal_modified_dates
             else "UNMODIFIED" if options.retain_longitudinal_full_dates else "REMOVED")
    return [DataElement(0x00120062, "CS", "YES"), DataElement(0x00120063, "LO", method),
            DataElement(0x00120064, "SQ", Sequence(codes)), DataElement(0x00280303, "CS", dates)]


def _replaces_unlisted_uids(tag: int, value: bytes) -> bool:
    """:meth:`_Instance._unlisted` for a UI element: an instance UID (not a definition one) the
    table does not name, with a value that is not a well-known UID."""
    keyword = keyword_for_tag(tag) or ""
    if keyword.endswith(DEFINITION_UID_SUFFIXES):
        return False
    text = value.decode("latin-1").rstrip("\0 ")
    return any(v not in UID_dictionary for v in text.split("\\") if v)


def _canonical(value: bytes, vr: str) -> bytes:
    """The bytes pydicom writes for a plain ASCII value it read as ``value`` (values without
    trailing NULs and spaces, leading spaces kept; padded again to even length)."""
    text = "\\".join(v.rstrip("\0 ") for v in value.decode("ascii").split("\\"))
    if vr == "UI":
        text = value.decode("ascii").rstrip("\0 ")
    data = text.encode("ascii")
    return data + (b"\0" if vr == "UI" else b" ") if len(data) % 2 else data


def _identifying_terms(header: Dataset, profile: Profile) -> re.Pattern | None:
    """What "clean" removes from kept text: the values of this instance's attributes that the
    profile removes or replaces (names also word by word), matched without regard to case."""
    terms = set()
    for tag in [int(t) for t in header.keys()]:  # noqa: SIM118
        if (tag >> 16) & 1 or profile.action(tag) not in (REMOVE, ZERO, DUMMY, UID) and tag != PATIENT_ID:
            continue
        raw = header.get_item(tag)
        vr = _vr_of(raw.VR, tag)
        if vr not in FREE_TEXT_VRS | {"DA", "DT"}:
            continue
        for value in _values(header[tag].value):
            text = str(value).strip()
            terms.add(text)
            if vr == "PN":
                terms.update(re.split(r"[\^= ]+", text))
    words = sorted((t for t in terms if len(t) >= 3), key=len, reverse=True)
    return re.compile("|".join(re.escape(t) for t in words), re.IGNORECASE) if words else None


def _text(dataset: Dataset, tag: int) -> str:
    """A single-valued ASCII attribute (CS, UI) as ``str(dataset.get(tag) or "")`` gives it,
    read from the raw bytes when pydicom has not converted it yet."""
    element = dataset.get_item(tag)
    if element is None:
        return ""
    if element.is_raw and isinstance(element.value, bytes):
        text = element.value.decode("latin-1")
        if "\\" not in text:
            return text.rstrip("\0 ") if element.VR == "UI" else text
    return str(dataset[tag].value or "")


@lru_cache(maxsize=4096)
def _keyword(tag: int) -> str:
    return keyword_for_tag(tag) or _tag_text(tag)


def _vr_of(vr: str | None, tag: int) -> str:
    if vr and vr != "UN":
        return vr
    try:
        known = dictionary_VR(tag)
    except KeyError:
        return vr or "UN"
    return known.split(" or ")[0]


def _values(value: object) -> list:
    if value is None or value == "":
        return []
    if isinstance(value, (MultiValue, list, tuple)):
        return list(value)
    return [value]


def _dummy(vr: str) -> object:
    if vr in BINARY_VRS:
        return bytes(8)
    return DUMMIES.get(vr, DUMMY_TEXT)


def _shift(value: str, offset: _dt.timedelta) -> str:
    """A DA or DT value moved by ``offset`` days (time and zone kept); unreadable dates become empty."""
    text = value.strip()
    if not text:
        return text
    try:
        day = _dt.datetime.strptime(text[:8], "%Y%m%d").date()
    except ValueError:
        return ""
    return (day + offset).strftime("%Y%m%d") + text[8:]


def _write_header(out: BinaryIO, meta: FileMetaDataset, header: Dataset, transfer_syntax: str) -> None:
    """Preamble, file meta and dataset (what ``dcmwrite`` does, without its deep copy of the
    file meta; a deflated dataset goes through ``dcmwrite``, which deflates it)."""
    if transfer_syntax in DEFLATED:
        header.file_meta = meta
        dcmwrite(out, header, enforce_file_format=True)
        return
    out.write(bytes(128) + b"DICM")
    stream = DicomFileLike(out)
    stream.is_little_endian, stream.is_implicit_VR = True, False
    write_file_meta_info(stream, meta, enforce_standard=True)
    _write_tail(out, header, transfer_syntax)


def _write_tail(out: BinaryIO, tail: Dataset, transfer_syntax: str) -> None:
    stream = DicomFileLike(out)
    stream.is_little_endian = transfer_syntax != EXPLICIT_VR_BE
    stream.is_implicit_VR = transfer_syntax == IMPLICIT_VR_LE
    write_dataset(stream, tail)


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
