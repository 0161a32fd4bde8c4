"""Decide, deterministically, what happens when several inputs claim one target."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics

from dicom_transfer import metrics
from dicom_transfer.elements import OUTCOMES, ValidInstance, instance_outcome
from dicom_transfer.errors import FAILURES, IO_ERRORS, ErrorRecord, error_text
from dicom_transfer.io.destination import remove_url, same_content
from dicom_transfer.io.files import open_url
from dicom_transfer.transforms.dofn import DoFn
from dicom_transfer.transforms.results import Deduplicated
from dicom_transfer.vocabulary import Stage

UNIQUE = "unique"


def same_file_content(first_url: str, second_url: str) -> bool:
    with open_url(first_url) as first, open_url(second_url) as second:
        return same_content(first, second)


def keep_one(target: str, group: Iterable[ValidInstance], stage: Stage, unchanged) -> Iterator:
    """Decide among the instances that claim ``target``: yield the outcomes and failures
    of the others (tagged), then ``(target, winner)``. ``unchanged`` is the Metrics counter."""
    winner, *others = sorted(group, key=lambda instance: instance.source)
    for other in others:
        yield from _decide(target, other, winner, stage, unchanged)
    yield target, winner


def _decide(target: str, other: ValidInstance, winner: ValidInstance, stage: Stage, unchanged) -> Iterator:
    """The outcome or failure of ``other``, which goes no further since ``winner`` claims ``target``."""
    try:
        yield from _compare(target, other, winner, stage, unchanged)
    finally:
        if other.origin is not None:  # a staged copy (de-identified) that will not be written
            remove_url(other.url)


def _compare(target: str, other: ValidInstance, winner: ValidInstance, stage: Stage, unchanged) -> Iterator:
    try:
        identical = other.size == winner.size and same_file_content(other.url, winner.url)
    except IO_ERRORS as exc:
        yield beam.pvalue.TaggedOutput(FAILURES, ErrorRecord.create(
            other.source, f"cannot compare with {winner.source}: {error_text(exc)}", stage))
        return
    if identical:
        unchanged.inc()
        yield beam.pvalue.TaggedOutput(OUTCOMES, instance_outcome(metrics.UNCHANGED, other, target))
    else:
        yield beam.pvalue.TaggedOutput(FAILURES, ErrorRecord.create(
            other.source,
            f"conflicting duplicate: {other.source} and {winner.source} both map to {target} "
            f"(SOP Instance UID {other.sop_uid}) but their bytes differ; {winner.source} was kept",
            stage, uids=(other.study_uid, other.series_uid, other.sop_uid)))


class _ResolveFn(DoFn):
    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        self.unchanged = Metrics.counter(metrics.NAMESPACE, metrics.UNCHANGED)

    def process(self, element: tuple[str, Iterable[ValidInstance]]) -> Iterator:
        yield from keep_one(*element, self.stage, self.unchanged)


class ResolveDuplicates(beam.PTransform):
    """Keep one instance per key (an output path, or a SOP Instance UID).

    Inputs are ``(key, ValidInstance)``. The instance with the smallest source URL
    wins; another one with identical bytes is counted ``unchanged``, one with
    different bytes is a failure naming both sources. Never a silent overwrite.

    Returns :class:`~.results.Deduplicated`: ``unique`` (``(key, ValidInstance)``), ``outcomes`` and ``failures``.

    Example::

        unique = routed | ResolveDuplicates()
    """

    def __init__(self, stage: Stage = Stage.WRITE) -> None:
        super().__init__()
        self.stage = stage

    def expand(self, keyed: beam.PCollection) -> Deduplicated:
        result = (
            keyed
            | "GroupByTarget" >> beam.GroupByKey()
            | "KeepOne" >> beam.ParDo(_ResolveFn(self.stage)).with_outputs(FAILURES, OUTCOMES, main=UNIQUE)
        )
        return Deduplicated(result[UNIQUE], result[OUTCOMES], result[FAILURES])


def _by_sop_uid(instance: ValidInstance) -> tuple[str, ValidInstance]:
    return instance.sop_uid, instance


class _FirstSeenFn(DoFn):
    """The first instance of each SOP Instance UID goes on as it arrives; a later one is decided
    against it as :func:`keep_one` decides (identical: ``unchanged``; else a failure naming both).
    For a runner that executes the whole pipeline in this process: the UIDs seen are kept across
    bundles in this one DoFn (the UID and the URL: ~360 bytes per instance with 55-character paths)."""

    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        self.unchanged = Metrics.counter(metrics.NAMESPACE, metrics.UNCHANGED)

    def setup(self) -> None:
        self.kept: dict[str, ValidInstance] = {}

    def process(self, instance: ValidInstance) -> Iterator:
        kept = self.kept.get(instance.sop_uid)
        if kept is None:
            self.kept[instance.sop_uid] = ValidInstance(instance.url, instance.size, "", "", "", "",
                                                        origin=instance.origin)
            yield instance
            return
        yield from _decide(instance.sop_uid, instance, kept, self.stage, self.unchanged)


class UniqueBySopUid(beam.PTransform):
    """One instance per SOP Instance UID, as a store keeps them (:class:`ResolveDuplicates`
    keyed by it: the first by source URL wins). With ``in_one_process`` (a runner that executes
    the whole pipeline in this process) no grouping: each instance goes on as it arrives, the
    first one listed wins, and the next step starts on the first instance instead of after the
    last (:class:`_FirstSeenFn`). Returns :class:`~.results.Deduplicated`: ``unique``
    (:class:`ValidInstance`), ``outcomes`` and ``failures``.

    Example::

        unique = instances | UniqueBySopUid(stage=Stage.STORE)
    """

    def __init__(self, stage: Stage = Stage.STORE, in_one_process: bool = False) -> None:
        super().__init__()
        self.stage = stage
        self.in_one_process = in_one_process

    def expand(self, instances: beam.PCollection) -> Deduplicated:
        if self.in_one_process:
            first = instances | "FirstBySopUid" >> beam.ParDo(_FirstSeenFn(self.stage)).with_outputs(
                FAILURES, OUTCOMES, main=UNIQUE)
            return Deduplicated(first[UNIQUE], first[OUTCOMES], first[FAILURES])
        resolved: Deduplicated = (instances | "KeyBySopUid" >> beam.Map(_by_sop_uid)
                                  | "ResolveDuplicates" >> ResolveDuplicates(stage=self.stage))
        return resolved._replace(unique=resolved.unique | "DropKey" >> beam.Values())
