"""Beam PTransforms, one per user-visible step, each usable on its own.

Each returns a named tuple of PCollections (:mod:`.results`); failed inputs leave through
``failures`` as :class:`dicom_transfer.errors.ErrorRecord` values.
"""

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
