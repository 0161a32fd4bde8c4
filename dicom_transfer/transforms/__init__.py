"""Beam PTransforms, one per user-visible step, each usable on its own.

Each returns a named tuple of PCollections (:mod:`.results`); failed inputs leave through
``failures`` as :class:`dicom_transfer.errors.ErrorRecord` values.

Each name is imported from its module when first used, so that a pipeline loads only the
modules of its own steps: de-identification (pydicom, ~0.3 s) and DIMSE (pynetdicom) are not
imported by a copy that uses neither.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_MODULE_OF = {
    "DeidSettings": "deidentify",
    "Deidentify": "deidentify",
    "ExpandPatterns": "expand",
    "ExpandToInstances": "retrieve",
    "FilterInstances": "route",
    "MigrateSeries": "migrate",
    "ReadAndValidate": "validate",
    "ResourcesToExport": "retrieve",
    "RetrieveAndWrite": "retrieve",
    "RouteToLayout": "route",
    "StoreInstances": "store",
    "WriteInstances": "write",
    "WriteMapping": "deidentify",
    "WriteReports": "report",
}

if TYPE_CHECKING:
    from dicom_transfer.elements import Outcome, ValidInstance
    from dicom_transfer.transforms.deidentify import Deidentify, DeidSettings, WriteMapping
    from dicom_transfer.transforms.expand import ExpandPatterns
    from dicom_transfer.transforms.migrate import MigrateSeries
    from dicom_transfer.transforms.report import WriteReports
    from dicom_transfer.transforms.retrieve import ExpandToInstances, ResourcesToExport, RetrieveAndWrite
    from dicom_transfer.transforms.route import FilterInstances, RouteToLayout
    from dicom_transfer.transforms.store import StoreInstances
    from dicom_transfer.transforms.validate import ReadAndValidate
    from dicom_transfer.transforms.write import WriteInstances
else:
    from dicom_transfer.elements import Outcome, ValidInstance


def __getattr__(name: str) -> object:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    globals()[name] = value
    return value


__all__ = [
    "DeidSettings",
    "Deidentify",
    "ExpandPatterns",
    "ExpandToInstances",
    "FilterInstances",
    "MigrateSeries",
    "Outcome",
    "ReadAndValidate",
    "ResourcesToExport",
    "RetrieveAndWrite",
    "RouteToLayout",
    "StoreInstances",
    "ValidInstance",
    "WriteInstances",
    "WriteMapping",
    "WriteReports",
]
