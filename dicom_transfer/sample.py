"""Generate sample DICOM data: valid instances in several studies, plus known-bad files.

Used by ``dicom-transfer demo``, the tests and the benchmarks. Everything is
made with pydicom; nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import warnings
from collections.abc import Iterator

from pydicom import config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
)

PIXEL_ROW_BYTES = 512  # 256 columns of 16-bit pixels


def uid_for(*parts: object) -> str:
    """A deterministic UID (``2.25.<128-bit number>``, PS3.5 B.2) derived from ``parts``."""
    digest = hashlib.sha256("\x1f".join(str(part) for part in parts).encode()).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def instance_bytes(
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    *,
    pixel_bytes: int = 4096,
    patient_id: str = "PAT-1",
    modality: str = "MR",
    study_date: str = "20260101",
    instance_number: int = 1,
    implicit: bool = False,
    frames: int = 1,
) -> bytes:
    """A DICOM Part 10 MR instance of about ``pixel_bytes`` pixel bytes (in ``frames`` frames).

    The UIDs are written as given, valid or not (bad samples are deliberate).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        previous = config.settings.writing_validation_mode
        config.settings.writing_validation_mode = config.IGNORE
        try:
            return _instance_bytes(study_uid, series_uid, sop_uid, pixel_bytes, patient_id,
                                   modality, study_date, instance_number, implicit, frames)
        finally:
            config.settings.writing_validation_mode = previous


def _instance_bytes(study_uid: str, series_uid: str, sop_uid: str, pixel_bytes: int,
                    patient_id: str, modality: str, study_date: str, instance_number: int,
                    implicit: bool, frames: int) -> bytes:
    rows = max(1, -(-pixel_bytes // (PIXEL_ROW_BYTES * frames)))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = study_date
    ds.Modality = modality
    ds.PatientName = "Sample^Patient"
    ds.PatientID = patient_id
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.InstanceNumber = instance_number
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.Rows = rows
    ds.Columns = PIXEL_ROW_BYTES // 2
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    total = rows * PIXEL_ROW_BYTES * frames
    ds.PixelData = bytes((instance_number + i) % 251 for i in range(251)) * (total // 251) + bytes(total % 251)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@dataclasses.dataclass(frozen=True)
class SampleInstance:
    path: str
    study_uid: str
    series_uid: str
    sop_uid: str
    size: int

    @property
    def relative_uid_path(self) -> str:
        return f"{self.study_uid}/{self.series_uid}/{self.sop_uid}.dcm"


@dataclasses.dataclass
class SampleSet:
    valid: list[SampleInstance]
    bad: dict[str, str]  # path -> what is wrong with it


def iter_uids(studies: int, series_per_study: int, instances_per_series: int,
              seed: str) -> Iterator[tuple[int, int, int, str, str, str]]:
    for st in range(studies):
        study = uid_for(seed, "study", st)
        for se in range(series_per_study):
            series = uid_for(seed, "series", st, se)
            for i in range(instances_per_series):
                yield st, se, i, study, series, uid_for(seed, "sop", st, se, i)


def write_sample_set(
    directory: str,
    *,
    studies: int = 3,
    series_per_study: int = 2,
    instances_per_series: int = 3,
    pixel_bytes: int = 4096,
    bad_files: bool = True,
    seed: str = "dicom-transfer-sample",
) -> SampleSet:
    """Write a sample set under ``directory`` (study folders, then the bad files at the top)."""
    os.makedirs(directory, exist_ok=True)
    valid = []
    for st, se, i, study, series, sop in iter_uids(studies, series_per_study,
                                                    instances_per_series, seed):
        data = instance_bytes(study, series, sop, pixel_bytes=pixel_bytes,
                              patient_id=f"PAT-{st + 1}", instance_number=i + 1,
                              modality="MR" if se % 2 == 0 else "CT")
        folder = os.path.join(directory, f"study{st + 1}", f"series{se + 1}")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"image{i + 1:03d}.dcm")
        with open(path, "wb") as out:
            out.write(data)
        valid.append(SampleInstance(path, study, series, sop, len(data)))
    bad = write_bad_files(directory, seed) if bad_files else {}
    return SampleSet(valid, bad)


def write_bad_files(directory: str, seed: str = "bad") -> dict[str, str]:
    """Write one file per kind of bad input; return ``{path: what is wrong}``."""
    good = instance_bytes(uid_for(seed, "b-study"), uid_for(seed, "b-series"), uid_for(seed, "b-sop"),
                          pixel_bytes=8192)
    bad_uid = instance_bytes(uid_for(seed, "b-study"), uid_for(seed, "b-series"), "1.2.3.abc")
    leading_zero = instance_bytes(uid_for(seed, "b-study"), "1.2.03", uid_for(seed, "b-sop2"))
    files = {
        "empty.dcm": (b"", "empty"),
        "notes.dcm": (b"This is a text file, not DICOM.\n" * 10, "not DICOM"),
        "truncated.dcm": (good[: len(good) - 3000], "truncated"),
        "no-preamble.dcm": (good[132:], "no preamble"),
        "bad-uid.dcm": (bad_uid, "invalid SOPInstanceUID"),
        "leading-zero-uid.dcm": (leading_zero, "invalid SeriesInstanceUID"),
    }
    written = {}
    for name, (data, reason) in files.items():
        path = os.path.join(directory, name)
        with open(path, "wb") as out:
            out.write(data)
        written[path] = reason
    return written


def write_large_instance(path: str | os.PathLike, study_uid: str, series_uid: str, sop_uid: str, *,
                         pixel_bytes: int, patient_name: str = "Sample^Patient", patient_id: str = "PAT-1") -> int:
    """Write a multi-frame MR instance with ``pixel_bytes`` of pixel data as a sparse file.

    The header is made by pydicom; the pixel data element's header is appended and the file is
    extended to its full size without writing the (zero) pixel bytes, so a 1 GB instance costs
    no disk and no time to make. Returns the file's size.
    """
    frame = PIXEL_ROW_BYTES * 256
    frames = max(1, pixel_bytes // frame)
    length = frames * frame
    header = instance_bytes(study_uid, series_uid, sop_uid, pixel_bytes=2, patient_id=patient_id, frames=1)
    pixel_offset = header.rindex(b"\xe0\x7f\x10\x00OW")  # the pixel data element pydicom wrote last
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pydicom import dcmread

        ds = dcmread(io.BytesIO(header), stop_before_pixels=True)
    ds.PatientName = patient_name
    ds.NumberOfFrames, ds.Rows = frames, 256
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    head = buffer.getvalue() + header[pixel_offset:pixel_offset + 8] + length.to_bytes(4, "little")
    with open(path, "wb") as out:
        out.write(head)
        out.truncate(len(head) + length)
    return len(head) + length
