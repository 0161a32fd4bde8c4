"""De-identification of one file: every Table E.1-1 action, the options, pixel data as bytes."""

from __future__ import annotations

import io
import pickle
import tracemalloc

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    MRImageStorage,
)

from dicom_transfer.deid.profile import (
    CLEAN,
    DUMMY,
    KEEP,
    REMOVE,
    UID,
    UIDS_INSIDE,
    ZERO,
    Profile,
    ProfileOptions,
    load_table,
    parse_safe_private,
)
from dicom_transfer.deid.pseudonyms import DeidKeyError, Pseudonyms
from dicom_transfer.deid.rewrite import DeidentificationError, Deidentifier
from dicom_transfer.part10 import map_elements, validate_part10
from dicom_transfer.sample import uid_for, write_large_instance

KEY = b"test-key-0123456789abcdef-not-secret"
STUDY, SERIES, SOP = uid_for("deid", "study"), uid_for("deid", "series"), uid_for("deid", "sop")
FRAME_OF_REFERENCE, REFERENCED = uid_for("deid", "for"), uid_for("deid", "referenced")
# Attributes not in Table E.1-1 that hold an instance UID (replaced) and a well-known UID (kept).
UNLISTED_INSTANCE_UID = "PresentationDisplayCollectionUID"
IDENTIFYING = ["Doe^Jane", "MRN-0042", "ACC-98765", "St Elsewhere", "Dr^Who", "SERIAL-777", "19610512",
               "SCANNER-9", "Jane's knee", STUDY, SERIES, SOP, FRAME_OF_REFERENCE, REFERENCED]
PIXELS = bytes(range(256)) * 64


def identified(ts: str = ExplicitVRLittleEndian, pixels: bytes = PIXELS, **extra) -> bytes:
    """An MR instance full of identifying attributes, one per kind of action."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = SOP
    meta.TransferSyntaxUID = ts
    meta.SourceApplicationEntityTitle = "SCANNER-9"
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, SOP
    ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY, SERIES
    ds.FrameOfReferenceUID = FRAME_OF_REFERENCE
    ds.add_new(pydicom.datadict.tag_for_keyword(UNLISTED_INSTANCE_UID), "UI", REFERENCED)
    ds.StudyDate, ds.StudyTime, ds.AcquisitionDate, ds.ContentDate = "20240315", "101500", "20240315", "20240315"
    ds.AcquisitionDateTime = "20240315101600.000000"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Doe^Jane", "MRN-0042", "19610512"
    ds.PatientSex, ds.PatientAge, ds.PatientSexNeutered = "F", "062Y", "UNALTERED"
    ds.IssuerOfPatientID = "ISSUER-HOSP"
    ds.AccessionNumber, ds.StudyID = "ACC-98765", "STUDY-55"
    ds.InstitutionName, ds.ReferringPhysicianName = "St Elsewhere", "Dr^Who"
    ds.StationName, ds.DeviceSerialNumber, ds.DetectorID = "SCANNER-9", "SERIAL-777", "DET-1"
    ds.ClinicalTrialSponsorName = "Sponsor Inc"
    ds.StudyDescription = "Knee MRI for Doe^Jane MRN-0042"
    ds.SeriesDescription = "Jane's knee"
    ds.Modality, ds.BurnedInAnnotation = "MR", "NO"
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = MRImageStorage, REFERENCED
    ds.ReferencedImageSequence = Sequence([ref])
    item = Dataset()
    item.ValueType, item.TextValue, item.ObservationDateTime = "TEXT", "Seen by Dr Who", "20240315"
    ds.ContentSequence = Sequence([item])
    ds.add_new(0x00090010, "LO", "ACME PRIVATE")
    ds.add_new(0x00091001, "LO", "Doe^Jane private copy")
    ds.add_new(0x00091002, "DS", "3.5")
    ds.add_new(0x60003000, "OW", b"\x01\x02" * 8)  # Overlay Data: repeating group 60xx
    ds.add_new(0x00200000, "UL", 1234)  # a group length, wrong once values change
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 64, 128, 16, 16, 15
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 0
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    ds.PixelData = pixels
    if ts == JPEGBaseline8Bit:
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    ds.DataSetTrailingPadding = b"\x00" * 16
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def deidentify(data: bytes, options: ProfileOptions | None = None, allow_burned_in: bool = False,
               key: bytes = KEY) -> tuple[bytes, Dataset, object]:
    deidentifier = Deidentifier(Profile(options or ProfileOptions()), Pseudonyms(key), allow_burned_in)
    out = io.BytesIO()
    result = deidentifier.rewrite(io.BytesIO(data), len(data), out, ("PatientID", "StudyDate"))
    output = out.getvalue()
    validate_part10(io.BytesIO(output), len(output))
    return output, pydicom.dcmread(io.BytesIO(output)), result


@pytest.fixture(scope="module")
def basic():
    return deidentify(identified())


def test_the_table_is_one_versioned_data_file_with_every_action():
    table = load_table()
    assert table.edition == "2024b" and len(table.attributes) > 600
    basic_actions = {action for action, _ in table.attributes.values()}
    assert basic_actions == {"D", "Z", "X", "U", "X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*"}
    assert table.private[0] == "X" and any(mask == 0xFF00FFFF for mask, *_ in table.repeating)


@pytest.mark.parametrize(("tag", "options", "expected"), [
    (0x00080050, ProfileOptions(), ZERO),  # Accession Number: Z
    (0x00120010, ProfileOptions(), DUMMY),  # Clinical Trial Sponsor Name: D
    (0x00100021, ProfileOptions(), REMOVE),  # Issuer of Patient ID: X
    (0x0020000D, ProfileOptions(), UID),  # Study Instance UID: U
    (0x00102203, ProfileOptions(), ZERO),  # Patient's Sex Neutered: X/Z -> Z
    (0x0018700A, ProfileOptions(), DUMMY),  # Detector ID: X/D -> D
    (0x00080023, ProfileOptions(), DUMMY),  # Content Date: Z/D -> D
    (0x00080080, ProfileOptions(), DUMMY),  # Institution Name: X/Z/D -> D
    (0x00081140, ProfileOptions(), UIDS_INSIDE),  # Referenced Image Sequence: X/Z/U*
    (0x60003000, ProfileOptions(), REMOVE),  # Overlay Data (60xx,3000): repeating group
    (0x00100040, ProfileOptions(retain_patient_characteristics=True), KEEP),  # option K
    (0x00080020, ProfileOptions(retain_longitudinal_modified_dates=True), CLEAN),  # option C
    (0x00081030, ProfileOptions(clean_descriptors=True), CLEAN),
    (0x0020000D, ProfileOptions(retain_uids=True), KEEP),
    (0x00181002, ProfileOptions(retain_uids=True, retain_device_identity=True), KEEP),  # K and K
    (0x00102110, ProfileOptions(retain_patient_characteristics=True, clean_descriptors=True), CLEAN),  # C and C
    (0x00280010, ProfileOptions(), None),  # Rows: not listed, kept
])
def test_each_table_action_resolves_under_the_options(tag, options, expected):
    assert Profile(options).action(tag) == expected


def test_basic_profile_applies_every_action(basic):
    output, ds, result = basic
    pseudonyms = Pseudonyms(KEY)
    # U: every instance UID, at any depth, in the file meta and unlisted instance UIDs too
    assert ds.StudyInstanceUID == pseudonyms.uid(STUDY) and ds.SOPInstanceUID == pseudonyms.uid(SOP)
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.FrameOfReferenceUID == pseudonyms.uid(FRAME_OF_REFERENCE)
    assert ds[UNLISTED_INSTANCE_UID].value == pseudonyms.uid(REFERENCED)
    # X/Z/U*: the sequence stays, its instance UIDs replaced, its class UID (well known) kept
    ref = ds.ReferencedImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == pseudonyms.uid(REFERENCED)
    assert ref.ReferencedSOPClassUID == MRImageStorage
    # Z, and X/Z -> Z: present and empty
    assert ds.AccessionNumber == "" and ds.StudyDate == "" and ds.PatientBirthDate == ""
    assert ds.PatientSexNeutered == "" and ds.AcquisitionDate == ""
    # D, X/D, Z/D, X/Z/D -> D: a dummy of the VR
    assert ds.ClinicalTrialSponsorName == "ANONYMIZED" and ds.DetectorID == "ANONYMIZED"
    assert ds.ContentDate == "19000101" and ds.InstitutionName == "ANONYMIZED"
    assert ds.AcquisitionDateTime == "19000101000000" and ds.DeviceSerialNumber == "ANONYMIZED"
    # X: removed, with descriptors, private attributes, overlays, padding and group lengths
    for keyword in ("IssuerOfPatientID", "StudyDescription", "SeriesDescription", "DataSetTrailingPadding",
                    "PatientAge"):
        assert keyword not in ds
    assert 0x00090010 not in ds and 0x00091001 not in ds and 0x60003000 not in ds and 0x00200000 not in ds
    assert "SourceApplicationEntityTitle" not in ds.file_meta
    # D on a sequence: the items' text replaced by dummies
    assert ds.ContentSequence[0].TextValue == "ANONYMIZED" and ds.ContentSequence[0].ValueType == "TEXT"
    # Z/D on Patient ID, Z on Patient's Name: the keyed pseudonym
    assert ds.PatientID == pseudonyms.patient_id("MRN-0042") == ds.PatientName
    # kept: not in the table
    assert ds.Modality == "MR" and ds.Rows == 64 and ds.PatientSex == ""
    assert result.attributes["PatientID"] == ds.PatientID


def test_marks_how_the_identity_was_removed(basic):
    _, ds, _ = basic
    assert ds.PatientIdentityRemoved == "YES" and ds.LongitudinalTemporalInformationModified == "REMOVED"
    assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100"]
    assert "2024b" in ds.DeidentificationMethod
    _, with_options, _ = deidentify(identified(), ProfileOptions(retain_longitudinal_modified_dates=True,
                                                                 clean_descriptors=True))
    assert [c.CodeValue for c in with_options.DeidentificationMethodCodeSequence] == ["113100", "113107", "113105"]
    assert with_options.LongitudinalTemporalInformationModified == "MODIFIED"


def test_no_identifying_string_is_left_anywhere_in_the_bytes(basic):
    output = basic[0]
    for text in IDENTIFYING:
        assert text.encode() not in output, text


def test_pixel_data_is_copied_byte_for_byte_and_the_file_is_valid(basic):
    output, ds, result = basic
    assert ds.PixelData == PIXELS and result.size == len(output)
    _, elements = map_elements(io.BytesIO(output), len(output))
    start, end = next((start, end) for tag, start, end in elements if tag == 0x7FE00010)
    assert output[start:end].endswith(PIXELS)


@pytest.mark.parametrize("ts", [ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian,
                                JPEGBaseline8Bit])
def test_every_encoding_is_kept(ts):
    pixels = pydicom.encaps.encapsulate([b"\xff\xd8frame-one\xff\xd9", b"\xff\xd8frame-two\xff\xd9"]) \
        if ts == JPEGBaseline8Bit else PIXELS
    output, ds, _ = deidentify(identified(ts, pixels))
    assert ds.file_meta.TransferSyntaxUID == ts
    assert ds.PixelData == pixels and ds.PatientID.startswith("DT")
    for text in IDENTIFYING:
        assert text.encode() not in output, text


def test_options_keep_and_clean():
    options = ProfileOptions(retain_patient_characteristics=True, retain_device_identity=True,
                             retain_institution_identity=True, retain_longitudinal_modified_dates=True,
                             clean_descriptors=True)
    _, ds, _ = deidentify(identified(), options)
    offset = Pseudonyms(KEY).date_offset_days("MRN-0042")
    assert -3652 <= offset <= -1
    import datetime
    shifted = (datetime.date(2024, 3, 15) + datetime.timedelta(days=offset)).strftime("%Y%m%d")
    assert ds.StudyDate == shifted and ds.AcquisitionDate == shifted and ds.StudyTime == "101500"
    assert ds.AcquisitionDateTime == shifted + "101600.000000"
    assert ds.PatientSex == "F" and ds.PatientAge == "062Y"  # K: patient characteristics
    assert ds.StationName == "SCANNER-9" and ds.DeviceSerialNumber == "SERIAL-777"  # K: device identity
    assert ds.InstitutionName == "St Elsewhere"  # K: institution identity
    # C: descriptors kept without the instance's identifying values
    assert ds.StudyDescription == "Knee MRI for * *"
    assert ds.SeriesDescription == "*'s knee"


def test_full_dates_and_uids_retained():
    _, ds, result = deidentify(identified(), ProfileOptions(retain_uids=True, retain_longitudinal_full_dates=True))
    assert ds.StudyInstanceUID == STUDY and ds.file_meta.MediaStorageSOPInstanceUID == SOP
    assert ds[UNLISTED_INSTANCE_UID].value == REFERENCED
    assert ds.StudyDate == "20240315" and ds.LongitudinalTemporalInformationModified == "UNMODIFIED"
    assert not any(kind == "UID" for kind, _ in result.mapping)


def test_safe_private_attributes_are_kept_with_their_creator():
    safe = parse_safe_private(["# kept", "(0009,xx02) ACME PRIVATE"])
    _, ds, _ = deidentify(identified(), ProfileOptions(retain_safe_private=safe))
    assert ds[0x00090010].value == "ACME PRIVATE" and ds[0x00091002].value == "3.5"
    assert 0x00091001 not in ds
    with pytest.raises(ValueError, match="line 1"):
        parse_safe_private(["(0008,xx02) NOT PRIVATE"])


@pytest.mark.parametrize(("extra", "refused"), [
    ({"BurnedInAnnotation": "YES"}, "BurnedInAnnotation is YES"),
    ({"BurnedInAnnotation": None, "Modality": "US"}, "modality US"),
    ({"BurnedInAnnotation": None, "SOPClassUID": "1.2.840.10008.5.1.4.1.1.7"}, "Secondary Capture"),
    ({"BurnedInAnnotation": "NO", "Modality": "US"}, None),
])
def test_burned_in_annotation_is_refused_unless_allowed(extra, refused):
    data = identified(**{k: v for k, v in extra.items() if v is not None})
    if extra.get("BurnedInAnnotation", "") is None:
        ds = pydicom.dcmread(io.BytesIO(data))
        del ds.BurnedInAnnotation
        buffer = io.BytesIO()
        ds.save_as(buffer)
        data = buffer.getvalue()
    if refused:
        with pytest.raises(DeidentificationError, match=refused):
            deidentify(data)
        assert deidentify(data, allow_burned_in=True)[1].PixelData == PIXELS
    else:
        deidentify(data)


def test_pseudonyms_are_keyed_deterministic_and_never_pickled():
    first, _, _ = deidentify(identified())
    again, _, _ = deidentify(identified())
    other, ds, _ = deidentify(identified(), key=b"another-key-0123456789abcdef")
    assert first == again and other != first
    assert ds.StudyInstanceUID != Pseudonyms(KEY).uid(STUDY)
    uid = Pseudonyms(KEY).uid(STUDY)
    assert uid.startswith("2.25.") and len(uid) <= 64
    with pytest.raises(TypeError, match="never pickled"):
        pickle.dumps(Pseudonyms(KEY))
    with pytest.raises(DeidKeyError, match="at least 16"):
        Pseudonyms(b"short")


def test_memory_stays_bounded_for_a_large_instance(tmp_path):
    path = tmp_path / "large.dcm"
    write_large_instance(path, STUDY, SERIES, SOP, pixel_bytes=200 << 20, patient_name="Doe^Jane")
    deidentifier = Deidentifier(Profile(ProfileOptions()), Pseudonyms(KEY))
    tracemalloc.start()
    with open(path, "rb") as source, open(tmp_path / "out.dcm", "wb") as out:
        result = deidentifier.rewrite(source, path.stat().st_size, out)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert result.size > 200 << 20 and peak < 8 << 20, peak
    with open(tmp_path / "out.dcm", "rb") as written:
        validate_part10(written, result.size)


def test_a_mapping_table_merged_with_an_earlier_one_keeps_one_row_per_original():
    from dicom_transfer.transforms.deidentify import MAPPING_HEADER, _csv_line, merge_mapping_lines

    earlier = ",".join(MAPPING_HEADER) + "\n" + "".join(_csv_line(row) for row in [
        (("UID", "1.2.3"), ("2.25.1", frozenset({"StudyInstanceUID"}))),
        (("PatientID", 'MRN,"42"\nB'), ("DT01", frozenset({"PatientID"})))])
    now = [_csv_line((("UID", "1.2.3"), ("2.25.1", frozenset({"ReferencedStudyInstanceUID"})))),
           _csv_line((("UID", "1.2.4"), ("2.25.2", frozenset({"SeriesInstanceUID"}))))]
    merged = sorted(merge_mapping_lines(earlier, now))
    assert merged == sorted([
        _csv_line((("UID", "1.2.3"), ("2.25.1", frozenset({"StudyInstanceUID", "ReferencedStudyInstanceUID"})))),
        _csv_line((("PatientID", 'MRN,"42"\nB'), ("DT01", frozenset({"PatientID"})))),
        _csv_line((("UID", "1.2.4"), ("2.25.2", frozenset({"SeriesInstanceUID"}))))])
    assert merge_mapping_lines("", now) == now
