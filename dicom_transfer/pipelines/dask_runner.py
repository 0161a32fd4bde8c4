"""Beam's DaskRunner, with what this product's pipelines need from it.

``--runner DaskRunner`` runs a pipeline on a ``dask.distributed`` cluster (one machine, or a
cluster started by dask-jobqueue on an HPC scheduler, or dask-kubernetes). Beam's own runner
(``apache_beam.runners.dask``, Beam 2.77) translates each transform into a Dask bag, but four
gaps make it lose or mix elements in pipelines like ours; this subclass closes them:

1. Tagged outputs are not separated: every consumer of any output of a multi-output ``ParDo``
   received the producer's whole bag (main and tagged outputs mixed). Here a ``ParDo`` yields
   ``(tag, value)`` pairs and each consumer takes the pairs of the output it reads.
2. What ``finish_bundle`` emits was dropped (results were collected before it ran).
3. Only the last transform's bag was computed: a branch that does not lead to it (a sink)
   never ran. Here every leaf (a bag no transform consumes) is computed, in one graph.
4. Side inputs were computed inside a worker task (a nested ``compute``); here they are
   dependencies of the task that reads them, computed once by the scheduler.

And one that makes it use the cluster: a ``GroupByKey`` gave as many partitions as its input
had (the shuffle a distributed client picks, "tasks", keeps them), and a pipeline that starts from
a few patterns has one, so everything after its first grouping ran as one task on one worker
thread, each ParDo's whole output held in that worker's memory. Here a grouping spreads its keys
over ``--dask_npartitions`` partitions, by default as many as the cluster has worker threads.
More partitions bound a task's memory better but cost more: each task unpickles its DoFn and
runs its ``setup``/``teardown`` (Beam's Dask runner does not reuse DoFns across bundles), about
50 ms per ParDo and partition here, so 64 partitions made a 500-file copy take 46 s instead of
6 s. Upstream would need DoFns kept per worker process, as the other runners do.

Upstream Beam would need the same five changes in ``transform_evaluator.ParDo`` and
``GroupByKey`` and ``DaskRunner.to_dask_bag_visitor`` / ``run_pipeline``. Metrics are not collected by Beam's
Dask runner (``result.metrics()`` raises): the product's summary is written by the pipeline
itself, so nothing here depends on them.
"""

from __future__ import annotations

import collections
import dataclasses
import typing as t

from apache_beam import pvalue
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, _OutputHandler
from apache_beam.runners.dask import transform_evaluator as te
from apache_beam.runners.dask.dask_runner import DaskOptions, DaskRunnerResult
from apache_beam.runners.dask.dask_runner import DaskRunner as BeamDaskRunner
from apache_beam.runners.dask.overrides import dask_overrides
from apache_beam.runners.runner import PipelineState
from apache_beam.transforms.core import DoFn
from apache_beam.transforms.sideinputs import SideInputMap
from apache_beam.utils.windowed_value import WindowedValue

NAME = "DaskRunner"  # what users write after --runner


def _run_bundle(items, do_fn_invoker_args, do_fn_invoker_kwargs, receivers, side_specs, *side_values):
    """One Dask partition through the DoFn: ``(tag, value)`` for everything it emits, from
    ``process`` and ``finish_bundle`` alike (tag None: the main output)."""
    if side_specs:
        do_fn_invoker_kwargs = dict(do_fn_invoker_kwargs)
        do_fn_invoker_kwargs["side_inputs"] = [
            SideInputMap(kind, view_options, [te.get_windowed_value(v, window_fn) for v in values])
            for (kind, view_options, window_fn), values in zip(side_specs, side_values, strict=True)]
    receivers.values.clear()
    invoker = DoFnInvoker.create_invoker(*do_fn_invoker_args, **do_fn_invoker_kwargs)
    invoker.invoke_setup()
    invoker.invoke_start_bundle()
    for item in items:
        invoker.invoke_process(item)
    invoker.invoke_finish_bundle()
    invoker.invoke_teardown()
    results = []
    for output in receivers.values:
        tag, value = (output.tag, output.value) if isinstance(output, pvalue.TaggedOutput) else (None, output)
        results.append((tag, value.value if isinstance(value, WindowedValue) else value))
    return results


@dataclasses.dataclass
class _ParDo(te.DaskBagOp):
    """A ParDo whose bag holds ``(tag, value)`` pairs (see the module docstring)."""

    side_bags: list = dataclasses.field(default_factory=list)

    def apply(self, input_bag, side_inputs=None):  # noqa: ARG002 - side inputs come as side_bags
        transform = self.transform
        args, kwargs = transform.raw_side_inputs
        main_input = next(iter(self.applied.main_inputs.values()))
        window_fn = main_input.windowing.windowfn if hasattr(main_input, "windowing") else None
        receivers = te.OneReceiver()
        invoker_args = [
            DoFnSignature(transform.fn),
            _OutputHandler(window_fn=window_fn, main_receivers=receivers[None], tagged_receivers=receivers,
                           per_element_output_counter=None, output_batch_converter=None,
                           process_yields_batches=False, process_batch_yields_elements=False),
        ]
        invoker_kwargs = dict(context=DoFnContext(transform.label, state=None), side_inputs=[],
                              input_args=list(args), input_kwargs=kwargs, user_state_context=None,
                              bundle_finalizer_param=DoFn.BundleFinalizerParam())
        specs = [(kind, options, fn) for kind, options, fn, _ in self.side_bags]
        values = [_whole(bag) for *_, bag in self.side_bags]
        return input_bag.map(te.get_windowed_value, window_fn).map_partitions(
            _run_bundle, invoker_args, invoker_kwargs, receivers, specs, *values)


def _key(item):
    return item[0]


def _grouped(item):
    key, values = item
    return key, [te.defenestrate(pair[1]) for pair in values]


@dataclasses.dataclass
class _GroupByKey(te.DaskBagOp):
    """Beam's grouping into ``npartitions`` partitions, not as many as its input had."""

    def apply(self, input_bag, side_inputs=None):  # noqa: ARG002 - a grouping has none
        partitions = self.bag_kwargs.get("npartitions") or input_bag.npartitions
        if input_bag.npartitions < partitions:
            # the shuffle a distributed client picks ("tasks") keeps its input's partitions
            input_bag = input_bag.repartition(npartitions=partitions)
        return input_bag.groupby(_key, npartitions=input_bag.npartitions).map(_grouped)


def _whole(bag):
    """A bag's elements as one delayed list: a dependency of the tasks that read it."""
    import dask

    # Not optimized on its own: that would rename (fuse) the upstream tasks, and the scheduler
    # would run them a second time under the new names, side effects (writes, requests) included.
    return dask.delayed(_concatenate)(*bag.to_delayed(optimize_graph=False))


def _concatenate(*partitions) -> list:
    return [item for partition in partitions for item in partition]


def _only(bag, tag):
    """The values of one output of a ``_ParDo`` bag."""
    # A named function taking the tag as an argument, not lambdas closing over it: with those, an
    # import's outcomes were read as its (empty) failures once the optimised graph ran, and the
    # summary counted 0 stored (tests/test_dask.py).
    return bag.map_partitions(_values_of, tag)


def _values_of(pairs, tag) -> list:
    return [value for pair_tag, value in pairs if pair_tag == tag]


class _Result(DaskRunnerResult):
    """Closes its connection to the scheduler once the job has ended (Beam's kept it open, and it
    tried to reconnect to a scheduler that had gone, long after the run)."""

    def wait_until_finish(self, duration=None) -> str:
        try:
            return super().wait_until_finish(duration)
        finally:
            if self._state in (PipelineState.DONE, PipelineState.FAILED):
                self.client.close()

    def cancel(self) -> str:
        try:
            return super().cancel()
        finally:
            self.client.close()


class DaskRunner(BeamDaskRunner):
    """Beam's DaskRunner with tagged outputs, ``finish_bundle`` outputs, side inputs as
    dependencies, and every sink computed (see the module docstring)."""

    @staticmethod
    def to_dask_bag_visitor(bag_kwargs=None) -> PipelineVisitor:
        bag_kwargs = bag_kwargs or {}

        @dataclasses.dataclass
        class Visitor(PipelineVisitor):
            bags: dict[AppliedPTransform, t.Any] = dataclasses.field(default_factory=collections.OrderedDict)
            consumed: set = dataclasses.field(default_factory=set)
            pardos: set = dataclasses.field(default_factory=set)

            def bag_of(self, value: pvalue.PCollection):
                producer = value.producer
                assert producer is not None  # every PCollection of a built pipeline has one
                self.consumed.add(producer)
                bag = self.bags[producer]
                return _only(bag, value.tag) if producer in self.pardos else bag

            def visit_transform(self, node: AppliedPTransform) -> None:
                kind = node.transform.__class__
                op_class: t.Callable[..., te.DaskBagOp] = te.TRANSLATIONS.get(kind, te.NoOp)
                if op_class is te.ParDo:
                    op_class = _ParDo
                elif op_class is te.GroupByKey:
                    op_class = _GroupByKey
                op = op_class(node, bag_kwargs=bag_kwargs)
                main = node.main_inputs.values() if node.main_inputs else node.inputs
                inputs = [self.bag_of(v) for v in main if isinstance(v, pvalue.PCollection)]
                if isinstance(op, _ParDo):
                    op.side_bags = [(type(si), si._view_options(), si._window_mapping_fn, self.bag_of(si.pvalue))
                                    for si in node.side_inputs]
                    self.pardos.add(node)
                bag = op.apply(inputs) if isinstance(op, te.Flatten) else op.apply(inputs[0] if inputs else None)
                if bag is not None:
                    self.bags[node] = bag

        return Visitor()

    def run_pipeline(self, pipeline, options):
        import dask
        import dask.distributed as ddist

        dask_options = options.view_as(DaskOptions).get_all_options(drop_default=True, current_only=True)
        bag_kwargs = DaskOptions._extract_bag_kwargs(dask_options)
        client = ddist.Client(**dask_options)
        if not bag_kwargs:  # neither --dask_npartitions nor --dask_partition_size: one per worker thread
            bag_kwargs = {"npartitions": max(1, sum(client.nthreads().values()))}
        pipeline.replace_all(dask_overrides())
        visitor = self.to_dask_bag_visitor(bag_kwargs)
        pipeline.visit(visitor)
        leaves = [bag for node, bag in visitor.bags.items() if node not in visitor.consumed]
        futures = client.compute(list(dask.optimize(*leaves)))
        return _Result(client, futures)
