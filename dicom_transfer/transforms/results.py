"""What each public PTransform returns: a small named tuple of PCollections, as Beam's
``WriteResult``, instead of a dict with literal keys.

Beam names each output after its field (``CopyFiles.failures`` in the graph, as with a dict),
and a typo in a field is an ``AttributeError`` at construction and a mypy error where the
result is annotated::

    written: Written = routed | "Write" >> WriteInstances(destination)
    failures = (..., written.failures) | beam.Flatten()

Element types: ``outcomes`` holds :class:`~dicom_transfer.elements.Outcome`, ``failures``
:class:`~dicom_transfer.errors.ErrorRecord`, ``mapping`` the de-identification mapping rows,
``unmatched`` ``(kind, pattern or line)`` pairs that selected nothing.
"""

from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam


class Written(NamedTuple):
    """Instances written or stored (:class:`~.write.WriteInstances`, :class:`~.store.StoreInstances`,
    :class:`~.dimse_store.DimseStoreInstances`). ``answers``: what the destination held of each
    series, asked by the store step while it sent the others (``((study, series),
    HeldFingerprint)``, see :mod:`~dicom_transfer.series_answers`), or ``None``."""

    outcomes: beam.PCollection
    failures: beam.PCollection
    answers: beam.PCollection | None = None


class Copied(NamedTuple):
    """Files copied by :class:`~.copy_files.CopyFiles` (``unmatched``: filter-file lines that
    selected nothing; ``None`` without a filter file, which Beam leaves out of the graph)."""

    outcomes: beam.PCollection
    failures: beam.PCollection
    unmatched: beam.PCollection | None = None


class Transferred(NamedTuple):
    """Instances retrieved and placed, or migrated (export and migrate, DICOMweb or DIMSE)."""

    outcomes: beam.PCollection
    failures: beam.PCollection
    mapping: beam.PCollection


class Found(NamedTuple):
    """``instances`` that passed a step (validated :class:`~dicom_transfer.elements.ValidInstance`,
    or ``((study, series), wanted SOPs)`` grouped by series), and the ``failures`` of the others."""

    instances: beam.PCollection
    failures: beam.PCollection


class Resources(NamedTuple):
    """The studies, series and instances asked for (:class:`~dicom_transfer.resources.ResourcePath`)."""

    resources: beam.PCollection
    failures: beam.PCollection


class Listed(NamedTuple):
    """Files found by :class:`~.expand.ExpandPatterns`: each :class:`~dicom_transfer.elements.FileRef`
    once, and ``(pattern, count)`` for each pattern in ``file_counts``."""

    files: beam.PCollection
    failures: beam.PCollection
    unmatched: beam.PCollection
    file_counts: beam.PCollection


class Selected(NamedTuple):
    """Instances a filter file selected (:class:`~.route.FilterInstances`), and the ``filtered``
    others."""

    instances: beam.PCollection
    filtered: beam.PCollection
    unmatched: beam.PCollection
    failures: beam.PCollection


class Unmatched(NamedTuple):
    """Filter-file lines that selected nothing: ``unmatched``, or ``failures`` when strict."""

    unmatched: beam.PCollection
    failures: beam.PCollection


class Routed(NamedTuple):
    """``(relative output path, ValidInstance)`` pairs (:class:`~.route.RouteToLayout`)."""

    routed: beam.PCollection
    failures: beam.PCollection


class Deduplicated(NamedTuple):
    """One of each group of inputs claiming one output (``unique``); the identical others are
    ``unchanged`` outcomes, the conflicting ones failures."""

    unique: beam.PCollection
    outcomes: beam.PCollection
    failures: beam.PCollection


class Deidentified(NamedTuple):
    """Instances de-identified into staged files (:class:`~.deidentify.DeidentifyInstances`)."""

    instances: beam.PCollection
    mapping: beam.PCollection
    outcomes: beam.PCollection
    failures: beam.PCollection


class QuickChecked(NamedTuple):
    """The ``files`` a re-run must read, and the ``unchanged`` outcomes of the others
    (:class:`~.manifest.SkipUnchanged`)."""

    files: beam.PCollection
    outcomes: beam.PCollection
