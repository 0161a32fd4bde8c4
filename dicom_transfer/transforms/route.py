"""Select instances with a filter file, and place them with a layout."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics

from dicom_transfer import metrics
from dicom_transfer.elements import ValidInstance
from dicom_transfer.errors import FAILURES, ErrorRecord
from dicom_transfer.io.files import open_url
from dicom_transfer.layout import Layout, LayoutError
from dicom_transfer.resources import ResourceFilter, iter_filter_file_lines
from dicom_transfer.transforms.dofn import DoFn
from dicom_transfer.transforms.results import Routed, Selected, Unmatched
from dicom_transfer.transforms.validate import INSTANCES
from dicom_transfer.vocabulary import Stage

ROUTED = "routed"
UNMATCHED = "unmatched"


def load_filter_file(url: str) -> ResourceFilter:
    """Read a Google filter file (``/studies/S[/series/SE[/instances/I]]`` lines).

    Raises
    ------
    ValueError
        On a malformed line, naming the file and the line number.
    """
    with open_url(url) as raw:
        lines = (line.decode("utf-8", "replace") for line in raw)
        return ResourceFilter(iter_filter_file_lines(lines, url))


MATCHED = "matched"


class _FilterFn(DoFn):
    def __init__(self) -> None:
        self.filtered = Metrics.counter(metrics.NAMESPACE, metrics.FILTERED)

    def process(self, instance: ValidInstance, selection: ResourceFilter) -> Iterator:
        selecting = selection.selecting(instance.study_uid, instance.series_uid, instance.sop_uid)
        if selecting:
            yield instance
            for path in selecting:
                yield beam.pvalue.TaggedOutput(MATCHED, path.filter_line)
        else:
            self.filtered.inc()
            yield beam.pvalue.TaggedOutput(metrics.FILTERED, instance)


class _UnmatchedLinesFn(DoFn):
    """The filter-file lines that selected no instance: warnings, or failures with ``strict``."""

    def __init__(self, url: str, strict: bool) -> None:
        self.url = url
        self.strict = strict

    def process(self, selection: ResourceFilter, matched: Iterable[str]) -> Iterator:
        seen = set(matched)
        for path in selection.paths():
            if path.filter_line in seen:
                continue
            if self.strict:
                yield beam.pvalue.TaggedOutput(FAILURES, ErrorRecord.create(
                    path.filter_line, f"filter-file line selects no instance of the input ({self.url})", Stage.FILTER))
            else:
                yield ("filterLines", path.filter_line)


def filter_file_selection(pipeline: beam.Pipeline, filter_file_url: str) -> beam.PCollection:
    """A one-element PCollection: the :class:`ResourceFilter` of the filter file (read on a worker),
    to be used as a side input (``beam.pvalue.AsSingleton``)."""
    return (pipeline
            | "FilterFile" >> beam.Create([filter_file_url])
            | "ParseFilterFile" >> beam.Map(load_filter_file))


class UnmatchedFilterLines(beam.PTransform):
    """The lines of the filter file (``selection``, see :func:`filter_file_selection`) that no
    input matched, from the lines that matched (the ``matched`` output of a selecting step).

    Returns :class:`~.results.Unmatched`: ``unmatched`` (``("filterLines", line)``) and ``failures`` (those lines
    instead, when ``strict``).
    """

    def __init__(self, selection: beam.PCollection, filter_file_url: str, strict: bool = False) -> None:
        super().__init__()
        self.selection = selection
        self.filter_file_url = filter_file_url
        self.strict = strict

    def expand(self, matched: beam.PCollection) -> Unmatched:
        distinct = matched | "DistinctMatchedLines" >> beam.Distinct()
        unmatched = self.selection | "UnmatchedLines" >> beam.ParDo(
            _UnmatchedLinesFn(self.filter_file_url, self.strict), beam.pvalue.AsIter(distinct)
        ).with_outputs(FAILURES, main=UNMATCHED)
        return Unmatched(unmatched[UNMATCHED], unmatched[FAILURES])


class FilterInstances(beam.PTransform):
    """Keep the instances a Google filter file names; the others are counted ``filtered``.

    The file is read once per worker as a side input, so a large filter file
    does not bloat the pipeline graph.

    Returns :class:`~.results.Selected`: ``instances`` (selected), ``filtered``, ``unmatched``
    (``("filterLines", line)`` for each line that selected nothing) and
    ``failures`` (those lines instead, when ``strict``).

    Example::

        kept = instances | FilterInstances("gs://bucket/filter.txt")
    """

    def __init__(self, filter_file_url: str, strict: bool = False) -> None:
        super().__init__()
        self.filter_file_url = filter_file_url
        self.strict = strict

    def expand(self, instances: beam.PCollection) -> Selected:
        selection = filter_file_selection(instances.pipeline, self.filter_file_url)
        result = instances | "Select" >> beam.ParDo(
            _FilterFn(), beam.pvalue.AsSingleton(selection)
        ).with_outputs(metrics.FILTERED, MATCHED, main=INSTANCES)
        lines: Unmatched = result[MATCHED] | "Unmatched" >> UnmatchedFilterLines(
            selection, self.filter_file_url, self.strict)
        return Selected(result[INSTANCES], result[metrics.FILTERED], lines.unmatched, lines.failures)


class _RouteFn(DoFn):
    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def process(self, instance: ValidInstance) -> Iterator:
        try:
            yield self.layout.relative_path(instance.values()), instance
        except LayoutError as exc:
            yield beam.pvalue.TaggedOutput(FAILURES, ErrorRecord.create(instance.url, str(exc), Stage.ROUTE))


class RouteToLayout(beam.PTransform):
    """Pair each instance with its output path (relative to the destination).

    Returns :class:`~.results.Routed`: ``routed`` (``(relative_path, ValidInstance)``) and ``failures``.

    Example::

        routed = instances | RouteToLayout(Layout.parse("uid"))
    """

    def __init__(self, layout: Layout) -> None:
        super().__init__()
        self.layout = layout

    def expand(self, instances: beam.PCollection) -> Routed:
        result = instances | "Route" >> beam.ParDo(_RouteFn(self.layout)).with_outputs(
            FAILURES, main=ROUTED)
        return Routed(result[ROUTED], result[FAILURES])
