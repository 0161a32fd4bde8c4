"""Select instances with a filter file, and place them with a layout."""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics

from dicom_transfer import metrics
from dicom_transfer.errors import FAILURES, ErrorRecord
from dicom_transfer.io.files import open_url
from dicom_transfer.layout import Layout, LayoutError
from dicom_transfer.resources import ResourceFilter, iter_filter_file_lines
from dicom_transfer.transforms.validate import INSTANCES, ValidInstance

ROUTED = "routed"


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


class _FilterFn(beam.DoFn):
    def __init__(self) -> None:
        self.filtered = Metrics.counter(metrics.NAMESPACE, metrics.FILTERED)

    def process(self, instance: ValidInstance, selection: ResourceFilter) -> Iterator:
        if selection.selects(instance.study_uid, instance.series_uid, instance.sop_uid):
            yield instance
        else:
            self.filtered.inc()
            yield beam.pvalue.TaggedOutput(metrics.FILTERED, instance)


class FilterInstances(beam.PTransform):
    """Keep the instances a Google filter file names; the others are counted ``filtered``.

    The file is read once per worker as a side input, so a large filter file
    does not bloat the pipeline graph.

    Returns a dict with ``instances`` (selected) and ``filtered``.

    Example::

        kept = instances | FilterInstances("gs://bucket/filter.txt")
    """

    def __init__(self, filter_file_url: str) -> None:
        super().__init__()
        self.filter_file_url = filter_file_url

    def expand(self, instances: beam.PCollection) -> dict[str, beam.PCollection]:
        selection = (
            instances.pipeline
            | "FilterFile" >> beam.Create([self.filter_file_url])
            | "ParseFilterFile" >> beam.Map(load_filter_file)
        )
        result = instances | "Select" >> beam.ParDo(
            _FilterFn(), beam.pvalue.AsSingleton(selection)
        ).with_outputs(metrics.FILTERED, main=INSTANCES)
        return {INSTANCES: result[INSTANCES], metrics.FILTERED: result[metrics.FILTERED]}


class _RouteFn(beam.DoFn):
    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def process(self, instance: ValidInstance) -> Iterator:
        try:
            yield self.layout.relative_path(instance.values()), instance
        except LayoutError as exc:
            yield beam.pvalue.TaggedOutput(FAILURES, ErrorRecord.create(instance.url, str(exc), "route"))


class RouteToLayout(beam.PTransform):
    """Pair each instance with its output path (relative to the destination).

    Returns a dict with ``routed`` (``(relative_path, ValidInstance)``) and ``failures``.

    Example::

        routed = instances | RouteToLayout(Layout.parse("uid"))
    """

    def __init__(self, layout: Layout) -> None:
        super().__init__()
        self.layout = layout

    def expand(self, instances: beam.PCollection) -> dict[str, beam.PCollection]:
        result = instances | "Route" >> beam.ParDo(_RouteFn(self.layout)).with_outputs(
            FAILURES, main=ROUTED)
        return {ROUTED: result[ROUTED], FAILURES: result[FAILURES]}
