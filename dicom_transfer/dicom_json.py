"""The DICOM JSON model (PS3.18 §F.2), as QIDO-RS and STOW-RS answers carry it: tags and values.

>>> item = {"00080018": {"vr": "UI", "Value": ["1.2.3"]}, "0020000E": {"vr": "UI"}}
>>> first_value(item, SOP_UID), first_value(item, SERIES_UID), values(item, STUDY_UID)
('1.2.3', None, [])
"""

from __future__ import annotations

STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"
SERIES_INSTANCES = "00201209"  # NumberOfSeriesRelatedInstances


def values(item: dict, tag: str) -> list:
    """The values of ``tag`` in a DICOM JSON object; ``[]`` when absent or empty."""
    return item.get(tag, {}).get("Value", []) or []


def first_value(item: dict, tag: str):
    """The first value of ``tag``, or None."""
    found = values(item, tag)
    return found[0] if found else None
