"""The input half shared by ``copy`` and ``import``: expand, validate, filter."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import apache_beam as beam

from dicom_transfer.elements import Outcome, instance_outcome
from dicom_transfer.metrics import FILTERED
from dicom_transfer.transforms import ExpandPatterns, FilterInstances, ReadAndValidate
from dicom_transfer.transforms.concurrency import DEFAULT_THREADS
from dicom_transfer.transforms.results import Found, Listed, QuickChecked, Selected


@dataclasses.dataclass
class Inputs:
    """Validated (and selected) instances, plus what the input stages reported."""

    instances: beam.PCollection
    failures: list[beam.PCollection]
    outcomes: list[beam.PCollection]
    unmatched: beam.PCollection
    file_counts: beam.PCollection  # distinct files matched, per bundle (see ExpandPatterns)


def _filtered_outcome(instance) -> Outcome:
    return instance_outcome(FILTERED, instance, "")


def read_inputs(pipeline: beam.Pipeline, patterns: Iterable[str], filter_file: str | None,
                keywords: Iterable[str] = (), threads: int = DEFAULT_THREADS, strict: bool = False,
                exclude: Iterable[str] = (), skip: beam.PTransform | None = None, spread: bool = True) -> Inputs:
    """Expand ``patterns``, validate every file, keep what ``filter_file`` selects.

    ``strict``: a pattern or filter-file line that matches nothing is a failure, not a warning.
    ``skip``: what decides, before reading, which files need no reading (``SkipUnchanged``).
    ``spread=False``: the files found go straight on, not grouped (see ``ExpandPatterns``).
    """
    expanded: Listed = pipeline | "ExpandPatterns" >> ExpandPatterns(patterns, strict=strict, exclude=exclude,
                                                                      spread=spread)
    to_read, skipped = expanded.files, []
    if skip is not None:
        checked_before: QuickChecked = expanded.files | "SkipUnchanged" >> skip
        to_read, skipped = checked_before.files, [checked_before.outcomes]
    checked: Found = to_read | "ReadAndValidate" >> ReadAndValidate(keywords, threads=threads)
    inputs = Inputs(checked.instances, [expanded.failures, checked.failures], skipped,
                    expanded.unmatched, expanded.file_counts)
    if filter_file:
        selected: Selected = inputs.instances | "FilterInstances" >> FilterInstances(filter_file, strict=strict)
        inputs.instances = selected.instances
        inputs.outcomes.append(selected.filtered | "FilteredOutcomes" >> beam.Map(_filtered_outcome))
        inputs.failures.append(selected.failures)
        inputs.unmatched = (inputs.unmatched, selected.unmatched) | "AllUnmatched" >> beam.Flatten()
    return inputs
