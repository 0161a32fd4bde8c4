"""De-identification: the PS3.15 Annex E Basic Application Level Confidentiality Profile.

Pure logic, no Beam: :mod:`~dicom_transfer.deid.profile` (Table E.1-1 and its options),
:mod:`~dicom_transfer.deid.pseudonyms` (keyed, consistent UIDs, patient ids and date offsets)
and :mod:`~dicom_transfer.deid.rewrite` (the rewrite of one Part 10 file, pixel data copied as
bytes). The Beam transform is :class:`dicom_transfer.transforms.deidentify.Deidentify`.
"""

from dicom_transfer.deid.profile import Profile, ProfileOptions, load_table, parse_safe_private
from dicom_transfer.deid.pseudonyms import DeidKeyError, Pseudonyms
from dicom_transfer.deid.rewrite import DeidentificationError, Deidentifier, Rewritten

__all__ = ["DeidentificationError", "Deidentifier", "DeidKeyError", "Profile", "ProfileOptions", "Pseudonyms",
           "Rewritten", "load_table", "parse_safe_private"]
