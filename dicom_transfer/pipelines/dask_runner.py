"""Beam's DaskRunner, with what this product's pipelines need from it.

``--runner DaskRunner`` runs a pipeline on a ``dask.distributed`` cluster (one machine, or a
cluster started by dask-jobqueue on an HPC scheduler, or dask-kubernetes). Beam's own runner
(``apache_beam.runners.dask``, Beam 2.77) translates each transform into a Dask bag, but four
gaps make it lose or mix elements in pipelines like ours; this subclass closes them:

1. Tagged outputs are not separated: every consumer of any output of a multi-output ``ParDo``
   received the producer's whole bag (main and tagged outputs mixed). Here each output goes only
   to what reads it.
2. What ``finish_bundle`` emits was dropped (results were collected before it ran).
3. Only the last transform's bag was computed: a branch that does not lead to it (a sink)
   never ran. Here every leaf (a bag no transform consumes) is computed, in one graph.
4. Side inputs were computed inside a worker task (a nested ``compute``); here they are
   dependencies of the task that reads them, computed once by the scheduler.

And two that make it use the cluster, and its memory, as the other runners do:

5. A ``GroupByKey`` gave as many partitions as its input had (the shuffle a distributed client
   picks, "tasks", keeps them), and a pipeline that starts from a few patterns has one, so
   everything after its first grouping ran as one task on one worker thread. Here a grouping
   spreads its keys over ``--dask_npartitions`` partitions, by default as many as the cluster has
   worker threads.
6. Each ``ParDo`` was a task of its own per partition that returned its whole output as a list
   (Beam's WindowedValues, then the values), held in the worker until every consumer had run: a
   worker's memory grew with the files per task (a 100,000-file copy: 360 MB a worker, against
   270 MB for 10,000). Here ParDos are fused into stages, as Beam's other runners do: a ParDo
   joins the stage of the ParDo whose output it reads (unless one of its side inputs is computed
   from that stage), and in a stage's task each value a step emits goes straight into the steps
   that read it, element by element (:func:`_run_stage`). Only what leaves a stage (for a
   grouping, a Flatten, a side input) is kept as a list; an output nothing reads is dropped.

More partitions (``--dask_npartitions``) cost time: with 64 a 500-file copy took 54-72 s instead
of 8-9 s with the default 4 (before the fusion 69-99 s instead of 10-17 s, same session). A
py-spy profile of that run puts the cost in the client, not in the workers (idle most of the
time): of ~13 s in ``run_pipeline``, ~7 s in ``dask.optimize`` and ~4 s pickling the task specs,
each of which carries its stage's pickled DoFns. Each task also unpickles its DoFns and runs
their ``setup``/``teardown`` (Beam's Dask runner does not reuse DoFns across bundles).

Upstream Beam would need these changes in ``transform_evaluator`` (``ParDo``, ``GroupByKey``)
and ``DaskRunner.to_dask_bag_visitor`` / ``run_pipeline``: a fusion pass that builds one
``map_partitions`` per stage instead of one per ParDo, ``finish_bundle`` outputs collected after
it ran, side inputs as task dependencies, every leaf computed, a grouping's partitions chosen
from the cluster, and DoFns kept per worker process as the other runners do. Metrics are not
collected by Beam's Dask runner (``result.metrics()`` raises): the product's summary is written
by the pipeline itself, so nothing here depends on them.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import typing as t

from apache_beam import pvalue
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, Receiver, _OutputHandler
from apache_beam.runners.dask import transform_evaluator as te
from apache_beam.runners.dask.dask_runner import DaskOptions, DaskRunnerResult
from apache_beam.runners.dask.dask_runner import DaskRunner as BeamDaskRunner
from apache_beam.runners.dask.overrides import dask_overrides
from apache_beam.runners.runner import PipelineState
from apache_beam.transforms.core import DoFn
from apache_beam.transforms.sideinputs import SideInputMap
from apache_beam.utils.windowed_value import WindowedValue

NAME = "DaskRunner"  # what users write after --runner


class _Push(Receiver):
    """Hands each value a step emits on one output to the steps of its stage that read it, and
    keeps it (without its window) for what reads it outside the stage: ``(exit key, value)``."""

    __slots__ = ("consumers", "exits", "keys")

    def __init__(self, consumers: list, exits: list, keys: list) -> None:
        self.consumers, self.exits, self.keys = consumers, exits, keys

    def receive(self, windowed_value: WindowedValue) -> None:
        for consumer in self.consumers:
            consumer.invoke_process(windowed_value)
        for key in self.keys:
            self.exits.append((key, windowed_value.value))


class _Discard(Receiver):
    """An output nothing reads."""

    def receive(self, windowed_value: WindowedValue) -> None:
        pass


class _Outputs(dict):
    """A step's receivers by output tag; an output nothing reads is discarded."""

    def __missing__(self, tag):
        return _DISCARD


_DISCARD = _Discard()


@dataclasses.dataclass
class _Step:
    """One ParDo of a stage, as the stage's task runs it; ``outputs`` maps each of its output tags
    that something reads to ``(indexes of the stage's steps that read it, exit keys)``."""

    signature: DoFnSignature
    label: str
    window_fn: t.Any
    args: list
    kwargs: dict
    side_specs: list  # (kind, view options, window mapping fn) of each side input
    outputs: dict = dataclasses.field(default_factory=dict)


def _run_stage(items, steps: list[_Step], *side_values) -> list:
    """One Dask partition through a stage: each element of ``items`` goes into the first step, and
    each value a step emits, from ``process`` or ``finish_bundle``, straight into the steps that
    read it, element by element; what is read outside the stage is returned as ``(exit key,
    value)`` pairs. Every step is set up and started before the first element, and finished in
    the order of the pipeline (a step's ``finish_bundle`` outputs reach the steps after it)."""
    exits: list = []
    invokers: list = [None] * len(steps)
    # where each step's side values start in side_values (the steps' side inputs, in order)
    starts = list(itertools.accumulate((len(step.side_specs) for step in steps), initial=0))
    for index in range(len(steps) - 1, -1, -1):  # the steps that read an output are made first
        step = steps[index]
        values = side_values[starts[index]:starts[index + 1]]
        receivers = _Outputs({tag: _Push([invokers[i] for i in readers], exits, keys)
                              for tag, (readers, keys) in step.outputs.items()})
        handler = _OutputHandler(window_fn=step.window_fn, main_receivers=receivers[None], tagged_receivers=receivers,
                                 per_element_output_counter=None, output_batch_converter=None,
                                 process_yields_batches=False, process_batch_yields_elements=False)
        side_inputs = [SideInputMap(kind, view_options, [te.get_windowed_value(v, window_fn) for v in value])
                       for (kind, view_options, window_fn), value in zip(step.side_specs, values, strict=True)]
        invokers[index] = DoFnInvoker.create_invoker(
            step.signature, handler, context=DoFnContext(step.label, state=None), side_inputs=side_inputs,
            input_args=list(step.args), input_kwargs=step.kwargs, user_state_context=None,
            bundle_finalizer_param=DoFn.BundleFinalizerParam())
    for invoker in invokers:
        invoker.invoke_setup()
    for invoker in invokers:
        invoker.invoke_start_bundle()
    first, window_fn = invokers[0], steps[0].window_fn
    for item in items:
        first.invoke_process(te.get_windowed_value(item, window_fn))
    for invoker in invokers:
        invoker.invoke_finish_bundle()
    for invoker in invokers:
        invoker.invoke_teardown()
    return exits


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


def _values_of(pairs, key) -> list:
    """The values of one exit of a stage's partition (see :func:`_run_stage`)."""
    # A named function taking the key as an argument, not lambdas closing over it: with those, an
    # import's outcomes were read as its (empty) failures once the optimised graph ran, and the
    # summary counted 0 stored (tests/test_dask.py).
    return [value for exit_key, value in pairs if exit_key == key]


@dataclasses.dataclass(eq=False)
class _Stage:
    """ParDos fused into one task per partition: the first reads a bag, each other one reads the
    output of an earlier one (see :func:`_run_stage`)."""

    nodes: list = dataclasses.field(default_factory=list)
    exits: dict = dataclasses.field(default_factory=dict)  # (node, tag) -> exit key


def _producer(value: pvalue.PCollection) -> AppliedPTransform:
    producer = value.producer
    assert producer is not None  # every PCollection of a built pipeline has one
    return producer


def _is_pardo(node: AppliedPTransform) -> bool:
    return te.TRANSLATIONS.get(node.transform.__class__) is te.ParDo


def _main_inputs(node: AppliedPTransform) -> list[pvalue.PCollection]:
    main = node.main_inputs.values() if node.main_inputs else node.inputs
    return [value for value in main if isinstance(value, pvalue.PCollection)]


class _Plan:
    """The Dask graph of a pipeline: its ParDos fused into stages (Beam's fusion), every other
    transform translated as Beam's Dask runner does.

    A ParDo joins the stage of the ParDo whose output it reads unless one of its side inputs
    depends on that stage; what is read outside a stage (by a grouping, a Flatten, a side input, a
    ParDo that could not join) leaves it as one of its exits."""

    def __init__(self, nodes: list[AppliedPTransform], bag_kwargs: dict) -> None:
        self.bag_kwargs = bag_kwargs
        self.stage_of: dict[AppliedPTransform, _Stage] = {}
        self.depends: dict[t.Any, set] = collections.defaultdict(set)  # unit -> the units it reads
        self.bags: dict[t.Any, t.Any] = {}  # unit -> its bag
        self.read: set = set()  # the units something reads
        self.units: list = []
        for node in nodes:
            self._place(node)

    def unit(self, node: AppliedPTransform):
        """What runs ``node``: its stage, or the node itself."""
        return self.stage_of.get(node, node)

    def _reaches(self, unit, target) -> bool:
        seen, todo = set(), [unit]
        while todo:
            current = todo.pop()
            if current is target:
                return True
            if id(current) not in seen:
                seen.add(id(current))
                todo.extend(self.depends[current])
        return False

    def _reads(self, unit, value: pvalue.PCollection) -> None:
        producer = _producer(value)
        source = self.unit(producer)
        if source is not unit:
            self.depends[unit].add(source)
            self.read.add(source)
            if isinstance(source, _Stage):
                source.exits.setdefault((producer, value.tag), len(source.exits))

    def _place(self, node: AppliedPTransform) -> None:
        inputs = _main_inputs(node)
        sides = [side.pvalue for side in node.side_inputs] if _is_pardo(node) else []
        stage = None
        if _is_pardo(node) and inputs and inputs[0].producer in self.stage_of:
            stage = self.stage_of[inputs[0].producer]
            if any(self._reaches(self.unit(_producer(side)), stage) for side in sides):
                stage = None  # it would depend on itself
        unit: _Stage | AppliedPTransform
        if _is_pardo(node):
            if stage is None:
                stage = _Stage()
                self.units.append(stage)
            stage.nodes.append(node)
            self.stage_of[node] = stage
            unit = stage
        else:
            unit = node
            self.units.append(node)
        for value in [*inputs, *sides]:
            self._reads(unit, value)

    def bag_of(self, value: pvalue.PCollection):
        """The bag of a PCollection read outside its stage."""
        producer = _producer(value)
        unit = self.unit(producer)
        bag = self.bag(unit)
        if isinstance(unit, _Stage):
            return bag.map_partitions(_values_of, unit.exits[producer, value.tag])
        return bag

    def bag(self, unit):
        if unit not in self.bags:
            self.bags[unit] = self._stage_bag(unit) if isinstance(unit, _Stage) else self._node_bag(unit)
        return self.bags[unit]

    def leaves(self) -> list:
        """The bags nothing reads: computing them runs the whole pipeline."""
        return [bag for bag in (self.bag(unit) for unit in self.units if unit not in self.read) if bag is not None]

    def _node_bag(self, node: AppliedPTransform):
        op_class: t.Callable[..., te.DaskBagOp] = te.TRANSLATIONS.get(node.transform.__class__, te.NoOp)
        if op_class is te.GroupByKey:
            op_class = _GroupByKey
        op = op_class(node, bag_kwargs=self.bag_kwargs)
        inputs = [self.bag_of(value) for value in _main_inputs(node)]
        return op.apply(inputs) if isinstance(op, te.Flatten) else op.apply(inputs[0] if inputs else None)

    def _stage_bag(self, stage: _Stage):
        steps, side_values = [], []
        index = {node: i for i, node in enumerate(stage.nodes)}
        for node in stage.nodes:
            transform = node.transform
            args, kwargs = transform.raw_side_inputs
            main = _main_inputs(node)[0]
            steps.append(_Step(DoFnSignature(transform.fn), transform.label,
                               main.windowing.windowfn if hasattr(main, "windowing") else None, list(args), kwargs,
                               [(type(side), side._view_options(), side._window_mapping_fn)
                                for side in node.side_inputs]))
            side_values += [_whole(self.bag_of(side.pvalue)) for side in node.side_inputs]
            if node is not stage.nodes[0]:
                producer = main.producer
                readers, _ = steps[index[producer]].outputs.setdefault(main.tag, ([], []))
                readers.append(index[node])
        for (node, tag), key in stage.exits.items():
            _, keys = steps[index[node]].outputs.setdefault(tag, ([], []))
            keys.append(key)
        return self.bag_of(_main_inputs(stage.nodes[0])[0]).map_partitions(_run_stage, steps, *side_values)


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


class _Transforms(PipelineVisitor):
    """A pipeline's primitive transforms, producers before their consumers."""

    def __init__(self) -> None:
        self.nodes: list[AppliedPTransform] = []

    def visit_transform(self, node: AppliedPTransform) -> None:
        self.nodes.append(node)


class DaskRunner(BeamDaskRunner):
    """Beam's DaskRunner with tagged outputs, ``finish_bundle`` outputs, side inputs as
    dependencies, every sink computed, groupings spread over the cluster and ParDos fused into
    stages (see the module docstring)."""

    def run_pipeline(self, pipeline, options):
        import dask
        import dask.distributed as ddist

        dask_options = options.view_as(DaskOptions).get_all_options(drop_default=True, current_only=True)
        bag_kwargs = DaskOptions._extract_bag_kwargs(dask_options)
        client = ddist.Client(**dask_options)
        if not bag_kwargs:  # neither --dask_npartitions nor --dask_partition_size: one per worker thread
            bag_kwargs = {"npartitions": max(1, sum(client.nthreads().values()))}
        pipeline.replace_all(dask_overrides())
        visitor = _Transforms()
        pipeline.visit(visitor)
        leaves = _Plan(visitor.nodes, bag_kwargs).leaves()
        futures = client.compute(list(dask.optimize(*leaves)))
        return _Result(client, futures)
