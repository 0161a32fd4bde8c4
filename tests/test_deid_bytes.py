"""The byte path of the rewrite (explicit and implicit VR little endian headers of plain ASCII values) writes
exactly what the dataset walk writes, on a varied corpus: same bytes, same mapping, same
attributes, same refusals; and it is the path taken for ordinary instances."""

from __future__ import annotations

import io
import random

import pytest
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
)

from dicom_transfer.deid import rewrite
from dicom_transfer.deid.profile import Profile, ProfileOptions
from dicom_transfer.deid.pseudonyms import Pseudonyms
from dicom_transfer.deid.rewrite import DeidentificationError, Deidentifier
from dicom_transfer.io.instances import plain_value

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR")  # the corpus has odd values on purpose
KEY = b"test-key-0123456789abcdef-not-secret"
KEYWORDS = ("PatientID", "StudyDate", "Modality", "PatientName", "SeriesDescription", "AccessionNumber")
OPTIONS = {
    "basic": ProfileOptions(),
    "retain uids": ProfileOptions(retain_uids=True),
    "retain uids and full dates": ProfileOptions(retain_uids=True, retain_longitudinal_full_dates=True),
    "retain institution identity": ProfileOptions(retain_institution_identity=True),
    "full dates": ProfileOptions(retain_longitudinal_full_dates=True),
}
# (keyword, VR, candidate values): plain, padded, multi-valued, empty, non-ASCII, odd forms.
POOL = [
    ("SpecificCharacterSet", "CS", ["ISO_IR 100", "ISO_IR 192", ["", "ISO 2022 IR 87"], " ISO_IR 100", None]),
    ("StudyInstanceUID", "UI", ["1.2.3.4", "1.2.3.45", "1.2.840.10008.1.2", "", "1.2.3 "]),
    ("SeriesInstanceUID", "UI", ["1.2.3.4.5", ["1.2.3", "1.2.4"], "9.8.7"]),
    ("FrameOfReferenceUID", "UI", ["1.2.3.4.6", ["1.2", ""], ""]),
    ("PresentationDisplayCollectionUID", "UI", ["1.2.840.10008.1.2.1", "1.2.3.99", ["1.2.840.10008.1.2", "1.5"]]),
    ("SOPClassUID", "UI", [MRImageStorage, CTImageStorage, SecondaryCaptureImageStorage, UltrasoundImageStorage]),
    ("CodingSchemeUID", "UI", ["1.2.3.77"]),
    ("TargetFrameOfReferenceUID", "UI", ["1.2.3.88", "1.2.840.10008.1.2"]),  # not in the table: replaced
    ("AnatomicRegionSequence", "SQ", [[]]),  # kept by the profile: walked for UIDs
    ("StudyDate", "DA", ["20240315", "", "2024"]),
    ("StudyTime", "TM", ["101500", "1015"]),
    ("AcquisitionDateTime", "DT", ["20240315101600.000000", "2024"]),
    ("PatientName", "PN", ["Doe^Jane", "Müller^Hans", "", "A^B=C^D", "Doe^John\\Roe^Richard"]),
    ("PatientID", "LO", ["MRN-0042", " MRN-1 ", "", "A\\B", "Ünïcode", "x"]),
    ("PatientBirthDate", "DA", ["19610512", ""]),
    ("PatientSex", "CS", ["F", "M", ""]),
    ("PatientAge", "AS", ["062Y"]),
    ("PatientWeight", "DS", ["70.5", ""]),
    ("PatientSize", "DS", ["1.7"]),
    ("AccessionNumber", "SH", ["ACC-1", ""]),
    ("StudyID", "SH", ["S-55"]),
    ("InstitutionName", "LO", ["St Elsewhere", "Hôpital"]),
    ("ReferringPhysicianName", "PN", ["Dr^Who", ""]),
    ("StationName", "SH", ["SCANNER-9"]),
    ("DeviceSerialNumber", "LO", ["SERIAL-777"]),
    ("StudyDescription", "LO", ["Knee MRI", "Genou ç"]),
    ("SeriesDescription", "LO", ["Jane's knee", ""]),
    ("ImageComments", "LT", ["comment"]),
    ("Modality", "CS", ["MR", "CT", "US", "OT", "MR\\CT"]),
    ("BurnedInAnnotation", "CS", ["NO", "YES", "no", " NO"]),
    ("PatientIdentityRemoved", "CS", ["NO"]),
    ("InstanceNumber", "IS", ["1", "12"]),
    ("Manufacturer", "LO", ["ACME"]),
    ("ContentDate", "DA", ["20240315"]),
    ("OperatorsName", "PN", ["Op^One"]),
    ("RequestAttributesSequence", "SQ", [[]]),
    ("AcquisitionNumber", "IS", ["3"]),
    ("WindowCenter", "DS", ["40", ["40", "400"]]),
    ("Rows", "US", [4]),
    ("Columns", "US", [4]),
    ("ProtocolName", "LO", ["Protocol", "Prot\0"]),
    ("DerivationDescription", "ST", ["derived"]),
    ("ReasonForStudy", "LO", ["reason"]),
]


def instance(rng: random.Random, ts: str = ExplicitVRLittleEndian) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = "1.2.3.4.5.6"
    meta.TransferSyntaxUID = ts
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, f"1.2.3.4.5.{rng.randrange(1000)}"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4", "1.2.3.4.5"
    ds.BurnedInAnnotation = "NO"
    for keyword, vr, values in rng.sample(POOL, rng.randrange(3, len(POOL))):
        value = values[0] if rng.random() < 0.9 else rng.choice(values)  # mostly plain
        if vr == "SQ":
            item = Dataset()
            item.RequestedProcedureID = "RP-1"
            value = Sequence([item])
        ds.add_new(tag_for_keyword(keyword), vr, value)
    if rng.random() < 0.1:
        ds.BurnedInAnnotation = "YES"
    if rng.random() < 0.3:
        ds.add_new(0x00090010, "LO", "ACME PRIVATE")
        ds.add_new(0x00091001, "LO", "private value")
    if rng.random() < 0.2:
        ds.add_new(0x00200000, "UL", 1234)  # a group length
    ds.BitsAllocated = 8
    ds.add_new(0x7FE00010, "OB", bytes(range(16)))
    if rng.random() < 0.2:
        ds.DataSetTrailingPadding = b"\0" * 4
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def run(deidentifier: Deidentifier, data: bytes):
    out = io.BytesIO()
    try:
        result = deidentifier.rewrite(io.BytesIO(data), len(data), out, KEYWORDS)
    except DeidentificationError as exc:
        return "refused", str(exc)
    attributes = {k: plain_value(v) for k, v in result.attributes.items()}
    return out.getvalue(), list(result.mapping.items()), attributes, result.study_uid, result.series_uid, \
        result.sop_uid, result.size


@pytest.mark.parametrize("name", list(OPTIONS))
def test_the_byte_path_writes_what_the_dataset_walk_writes(name, monkeypatch):
    rng = random.Random(f"deid-bytes-{name}")
    corpus = [instance(rng) for _ in range(100)] + [instance(rng, ImplicitVRLittleEndian) for _ in range(60)]
    by_bytes = Deidentifier(Profile(OPTIONS[name]), Pseudonyms(KEY))
    walked = Deidentifier(Profile(OPTIONS[name]), Pseudonyms(KEY))
    walked.by_bytes = False
    assert by_bytes.by_bytes
    taken = {ExplicitVRLittleEndian: 0, ImplicitVRLittleEndian: 0}
    original = rewrite.Deidentifier._splice_bytes

    def counting(self, source, out, transfer_syntax, *args):
        done = original(self, source, out, transfer_syntax, *args)
        taken[transfer_syntax] += done is not None
        return done

    monkeypatch.setattr(rewrite.Deidentifier, "_splice_bytes", counting)
    outcomes = set()
    for data in corpus:
        expected = run(walked, data)
        assert run(by_bytes, data) == expected
        outcomes.add(expected[0] == "refused")
    assert outcomes == {True, False}  # both refusals and rewrites were compared
    assert 20 <= taken[ExplicitVRLittleEndian] < 100 and 10 <= taken[ImplicitVRLittleEndian] < 60  # both paths


@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_ordinary_instances_take_the_byte_path(transfer_syntax, monkeypatch):
    def no_walk(*args):
        raise AssertionError("the dataset walk was used")

    monkeypatch.setattr(rewrite.Deidentifier, "_splice", no_walk)
    deidentifier = Deidentifier(Profile(ProfileOptions()), Pseudonyms(KEY))
    rng = random.Random(1)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, "1.2.3.4.5.6"
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, "1.2.3.4.5.6"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4", "1.2.3.4.5"
    ds.PatientName, ds.PatientID, ds.StudyDate, ds.Modality = "Doe^Jane", "MRN-1", "20240315", "MR"
    ds.add_new(0x00090010, "LO", "ACME PRIVATE")
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated = 8
    ds.PixelData = bytes(rng.randrange(256) for _ in range(16))
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    data = out.getvalue()
    output, mapping, attributes, *_ = run(deidentifier, data)
    assert b"Doe^Jane" not in output and b"MRN-1" not in output and b"1.2.3.4" not in output
    assert attributes["Modality"] == "MR" and attributes["PatientID"].startswith("DT")
    assert [kind for (kind, _), _ in mapping] == ["UID", "PatientID", "UID", "UID"]
