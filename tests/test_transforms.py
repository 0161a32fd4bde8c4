"""Each public PTransform on its own, in a TestPipeline, checked with Beam's assert_that: what a user
composing them into their own pipeline gets from each output of its result (transforms/results.py)."""

from __future__ import annotations

import os
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to, is_empty
from conftest import local_pipeline

from dicom_transfer.elements import FileRef
from dicom_transfer.layout import Layout
from dicom_transfer.resources import ResourcePath
from dicom_transfer.sample import instance_bytes, uid_for, write_sample_set
from dicom_transfer.transforms import ExpandPatterns, FilterInstances, ReadAndValidate, RouteToLayout, WriteInstances
from dicom_transfer.transforms.copy_files import CopyFiles
from dicom_transfer.transforms.deidentify import Deidentify, DeidSettings
from dicom_transfer.transforms.deidentify_files import DeidentifyFiles
from dicom_transfer.transforms.duplicates import UniqueBySopUid
from dicom_transfer.transforms.retrieve import ResourcesToExport
from dicom_transfer.vocabulary import Stage

STUDY, SERIES = uid_for("t", "study"), uid_for("t", "series")


@pytest.fixture
def sample(tmp_path):
    """2 studies × 1 series × 2 instances, and the six kinds of bad file."""
    return write_sample_set(str(tmp_path / "in"), studies=2, series_per_study=1, instances_per_series=2,
                            pixel_bytes=256)


def file_refs(paths) -> list[FileRef]:
    return [FileRef(str(path), os.path.getsize(path)) for path in paths]


def test_expand_patterns_lists_each_file_once_and_names_the_pattern_that_matched_nothing(sample, tmp_path):
    root = tmp_path / "in"
    nothing = f"{root}/absent/**.dcm"
    with local_pipeline() as p:
        listed = p | ExpandPatterns([f"{root}/**.dcm", f"{root}/study1/**", nothing])
        assert_that(listed.files | beam.Map(lambda ref: (ref.url, ref.size)), equal_to(
            [(i.path, i.size) for i in sample.valid] + [(path, os.path.getsize(path)) for path in sample.bad]),
            label="files")
        assert_that(listed.unmatched, equal_to([("patterns", nothing)]), label="unmatched")
        assert_that(listed.failures, is_empty(), label="failures")
        assert_that(listed.file_counts | beam.CombineGlobally(sum), equal_to([len(sample.valid) + len(sample.bad)]),
                    label="counts")


@pytest.mark.parametrize("spread", [True, False])
@pytest.mark.parametrize("patterns", [["**", "**.dcm", "study1/**"], ["**", "**"]], ids=["overlapping", "repeated"])
def test_expand_patterns_deduplicates_across_chunks_and_bundles_flushes(sample, tmp_path, monkeypatch, spread,
                                                                       patterns):
    """Files cross the de-duplicating grouping in chunks (a few buckets, a few held at once here):
    a file matched by two patterns whose copies went in different chunks is still listed once. Without
    the grouping (``spread=False``, for a runner in one process) as well, a pattern given twice too."""
    from dicom_transfer.transforms import expand
    monkeypatch.setattr(expand, "HELD", 3)
    monkeypatch.setattr(expand, "BUCKETS", 2)
    root = tmp_path / "in"
    expected = sorted([i.path for i in sample.valid] + [str(path) for path in sample.bad])
    with local_pipeline() as p:
        listed = p | ExpandPatterns([f"{root}/{pattern}" for pattern in patterns], spread=spread)
        assert_that(listed.files | beam.Map(lambda ref: ref.url), equal_to(expected), label="files")
        assert_that(listed.file_counts | beam.CombineGlobally(sum), equal_to([len(expected)]), label="counts")


def test_read_and_validate_passes_the_valid_and_records_each_bad_file_once(sample):
    with local_pipeline() as p:
        refs = p | beam.Create(file_refs([i.path for i in sample.valid] + list(sample.bad)))
        checked = refs | ReadAndValidate(keywords=["PatientID"])
        assert_that(checked.instances | beam.Map(lambda i: (i.url, i.uids, dict(i.attributes)["PatientID"])),
                    equal_to([(i.path, (i.study_uid, i.series_uid, i.sop_uid), f"PAT-{n // 2 + 1}")
                              for n, i in enumerate(sample.valid)]), label="instances")
        assert_that(checked.failures | beam.Map(lambda r: (r.identifier, r.stage)),
                    equal_to([(path, Stage.VALIDATE) for path in sample.bad]), label="failures")


def test_filter_instances_keeps_what_the_filter_file_names(sample, tmp_path):
    first, second = sample.valid[0], sample.valid[2]  # study 1, instance 1; study 2, instance 1
    absent = uid_for("t", "absent")
    filter_file = tmp_path / "filter.txt"
    filter_file.write_text(f"/studies/{first.study_uid}/series/{first.series_uid}/instances/{first.sop_uid}\n"
                           f"/studies/{second.study_uid}\n/studies/{absent}\n")
    with local_pipeline() as p:
        checked = p | beam.Create(file_refs([i.path for i in sample.valid])) | ReadAndValidate()
        selected = checked.instances | FilterInstances(str(filter_file))
        assert_that(selected.instances | beam.Map(lambda i: i.sop_uid),
                    equal_to([first.sop_uid, second.sop_uid, sample.valid[3].sop_uid]), label="selected")
        assert_that(selected.filtered | beam.Map(lambda i: i.sop_uid), equal_to([sample.valid[1].sop_uid]),
                    label="filtered")
        assert_that(selected.unmatched, equal_to([("filterLines", f"/studies/{absent}")]), label="unmatched")
        assert_that(selected.failures, is_empty(), label="failures")


def test_route_to_layout_places_by_uid_and_fails_what_the_layout_cannot_place(sample):
    with local_pipeline() as p:
        instances = p | beam.Create(file_refs([i.path for i in sample.valid])) | ReadAndValidate(["AccessionNumber"])
        routed = instances.instances | "ByUid" >> RouteToLayout(Layout.parse("uid"))
        assert_that(routed.routed | beam.Map(lambda pair: pair[0]),
                    equal_to([i.relative_uid_path for i in sample.valid]), label="routed")
        assert_that(routed.failures, is_empty(), label="no failures")
        unplaced = instances.instances | "ByAccession" >> RouteToLayout(
            Layout.parse("{AccessionNumber}/{SOPInstanceUID}.dcm"))
        assert_that(unplaced.routed, is_empty(), label="none placed")
        assert_that(unplaced.failures | beam.Map(lambda r: (r.identifier, r.stage)),
                    equal_to([(i.path, Stage.ROUTE) for i in sample.valid]), label="route failures")


@pytest.mark.parametrize("in_one_process", [False, True])
def test_unique_by_sop_uid_keeps_one_counts_an_identical_copy_and_fails_a_conflicting_one(tmp_path, in_one_process):
    sop = uid_for("t", "sop")
    data = instance_bytes(STUDY, SERIES, sop)
    paths = {name: tmp_path / name for name in ("a.dcm", "b.dcm", "c.dcm")}
    paths["a.dcm"].write_bytes(data)
    paths["b.dcm"].write_bytes(data)
    paths["c.dcm"].write_bytes(instance_bytes(STUDY, SERIES, sop, patient_id="OTHER"))
    with local_pipeline() as p:
        checked = p | beam.Create(file_refs(paths.values())) | ReadAndValidate()
        unique = checked.instances | UniqueBySopUid(stage=Stage.STORE, in_one_process=in_one_process)
        assert_that(unique.unique | beam.Map(lambda i: i.url), equal_to([str(paths["a.dcm"])]), label="unique")
        assert_that(unique.outcomes | beam.Map(lambda o: (o.kind, o.source)),
                    equal_to([("unchanged", str(paths["b.dcm"]))]), label="outcomes")
        assert_that(unique.failures | beam.Map(lambda r: (r.identifier, r.stage, "conflicting duplicate" in r.error)),
                    equal_to([(str(paths["c.dcm"]), Stage.STORE, True)]), label="failures")


@pytest.mark.parametrize("threads", [1, 4])
def test_write_instances_writes_each_instance_once_and_never_overwrites_other_bytes(sample, tmp_path, threads):
    out = tmp_path / "out"
    conflict = sample.valid[0]
    (out / Path(conflict.relative_uid_path).parent).mkdir(parents=True)
    (out / conflict.relative_uid_path).write_bytes(b"other bytes")
    with local_pipeline() as p:
        instances = p | beam.Create(file_refs([i.path for i in sample.valid])) | ReadAndValidate()
        routed = instances.instances | RouteToLayout(Layout.parse("uid"))
        written = routed.routed | WriteInstances(str(out), threads=threads, run="run-1")
        assert_that(written.outcomes | beam.Map(lambda o: (o.kind, o.source)),
                    equal_to([("success", i.path) for i in sample.valid[1:]]), label="outcomes")
        assert_that(written.failures | beam.Map(lambda r: (r.identifier, "exists with different content" in r.error)),
                    equal_to([(conflict.path, True)]), label="failures")
    for instance in sample.valid[1:]:
        assert (out / instance.relative_uid_path).read_bytes() == Path(instance.path).read_bytes()
    assert (out / conflict.relative_uid_path).read_bytes() == b"other bytes"


def test_copy_files_validates_routes_and_writes_in_one_step(sample, tmp_path):
    out = tmp_path / "out"
    filter_file = tmp_path / "filter.txt"
    absent = uid_for("t", "absent")
    filter_file.write_text(f"/studies/{sample.valid[0].study_uid}\n/studies/{absent}\n")
    with local_pipeline() as p:
        refs = p | beam.Create(file_refs([i.path for i in sample.valid] + list(sample.bad)))
        copied = refs | CopyFiles(str(out), Layout.parse("uid"), run="run-1", filter_file=str(filter_file))
        assert_that(copied.outcomes | beam.Map(lambda o: (o.kind, o.source)),
                    equal_to([("success", i.path) for i in sample.valid[:2]]
                             + [("filtered", i.path) for i in sample.valid[2:]]), label="outcomes")
        assert_that(copied.failures | beam.Map(lambda r: (r.identifier, r.stage)),
                    equal_to([(path, Stage.VALIDATE) for path in sample.bad]), label="failures")
        assert_that(copied.unmatched, equal_to([("filterLines", f"/studies/{absent}")]), label="unmatched")
    assert sorted(str(path.relative_to(out)) for path in out.rglob("*.dcm")) == sorted(
        i.relative_uid_path for i in sample.valid[:2])


def test_deidentify_gives_new_uids_a_mapping_row_per_identifier_and_keeps_the_source_in_reports(
        sample, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_DEID_KEY", "a-key-for-the-test")
    originals = {i.sop_uid for i in sample.valid}
    with local_pipeline() as p:
        checked = p | beam.Create(file_refs([i.path for i in sample.valid])) | ReadAndValidate()
        deid = checked.instances | Deidentify(DeidSettings(key_env="TEST_DEID_KEY"), str(tmp_path / "staging"))
        assert_that(deid.instances | beam.Map(lambda i: (i.source, i.sop_uid in originals, i.sop_uid[:5])),
                    equal_to([(i.path, False, "2.25.") for i in sample.valid]), label="instances")
        assert_that(deid.mapping | beam.Filter(lambda row: row.original in originals)
                    | beam.Map(lambda row: row.original) | beam.Distinct(), equal_to(sorted(originals)),
                    label="mapping")
        assert_that(deid.failures, is_empty(), label="failures")


def test_deidentify_files_validates_deidentifies_and_writes_in_one_step(sample, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_DEID_KEY", "a-key-for-the-test")
    out = tmp_path / "out"
    originals = {i.sop_uid for i in sample.valid}
    with local_pipeline() as p:
        refs = p | beam.Create(file_refs([i.path for i in sample.valid] + list(sample.bad)))
        done = refs | DeidentifyFiles(DeidSettings(key_env="TEST_DEID_KEY"), str(out), str(out / ".staging"),
                                      Layout.parse("uid"), run="run-1")
        assert_that(done.outcomes | beam.Map(lambda o: (o.kind, o.source, o.sop in originals)),
                    equal_to([(kind, i.path, False) for i in sample.valid for kind in ("success", "deidentified")]),
                    label="outcomes")
        assert_that(done.failures | beam.Map(lambda r: (r.identifier, r.stage)),
                    equal_to([(path, Stage.VALIDATE) for path in sample.bad]), label="failures")
        assert_that(done.mapping | beam.Filter(lambda row: row.original in originals)
                    | beam.Map(lambda row: row.original) | beam.Distinct(), equal_to(sorted(originals)),
                    label="mapping")
    written = list(out.rglob("*.dcm"))
    assert len(written) == len(sample.valid) and all(p.name.startswith("2.25.") for p in written)
    assert not [p for p in (out / ".staging").rglob("*") if p.is_file()]


def test_resources_to_export_parses_identifiers_and_records_a_malformed_one():
    study, series = uid_for("t", "s1"), uid_for("t", "se1")
    with local_pipeline() as p:
        resources = p | ResourcesToExport(None, identifiers=[study, f"{study}/{series}", "1.2.abc"])
        assert_that(resources.resources, equal_to([ResourcePath(study), ResourcePath(study, series)]),
                    label="resources")
        assert_that(resources.failures | beam.Map(lambda r: r.identifier), equal_to(["1.2.abc"]), label="failures")


def test_dofns_show_beam_only_their_own_methods_and_stateful_ones_stay_stateful():
    """Beam inspects the signature of every method dir() lists, several times per DoFn (~0.3 s of
    a copy's start): the product's DoFns list their own names, and Beam still finds state in them."""
    from apache_beam.coders import VarIntCoder
    from apache_beam.transforms import userstate

    from dicom_transfer.transforms.dofn import DoFn

    class Stateless(DoFn):
        def process(self, element):
            yield element

    class Counting(DoFn):
        COUNT = userstate.ReadModifyWriteStateSpec("count", VarIntCoder())

        def process(self, element, count=DoFn.StateParam(COUNT)):  # noqa: B008 - how Beam declares state
            yield element

    assert "process" in dir(Stateless()) and "default_label" not in dir(Stateless())
    assert not userstate.is_stateful_dofn(Stateless())
    assert userstate.is_stateful_dofn(Counting())
    with local_pipeline() as p:
        assert_that(p | beam.Create([1, 2]) | beam.ParDo(Stateless()), equal_to([1, 2]))


@pytest.mark.parametrize("spread", [True, False])
def test_expand_patterns_groups_only_to_spread_the_files(tmp_path, spread):
    """In one process the files found go straight on (no grouping to wait for); for runners with
    several workers they go through the grouping that spreads them."""
    p = beam.Pipeline()
    _ = p | ExpandPatterns([f"{tmp_path}/a/**", f"{tmp_path}/b/**"], spread=spread)
    urns = {transform.spec.urn for transform in p.to_runner_api().components.transforms.values()}
    assert ("beam:transform:group_by_key:v1" in urns) == spread


def test_patterns_may_overlap_when_one_starts_in_or_below_another(tmp_path, monkeypatch):
    from dicom_transfer.transforms.expand import may_overlap

    monkeypatch.chdir(tmp_path)
    assert not may_overlap(["/d/study1/**", "/d/study2/**", "/d/study10/*.dcm"])  # an input list of studies
    assert not may_overlap(["/d/a.dcm", "/d/b.dcm"]) and not may_overlap(["/d/**"])
    assert may_overlap(["/d/**", "/d/study1/**"]) and may_overlap(["/d/study1/*.dcm", "/d/study1/**.dcm"])
    assert may_overlap(["/d/**", "/d/**"]) and may_overlap([f"{tmp_path}/in/**", "in/x/*.dcm"])
    assert may_overlap(["gs://b/p/**", "gs://b/p/q/*"]) and not may_overlap(["gs://b/p/**", "gs://b/pq/*"])
    assert not may_overlap(["/d/**", "/d/a/**/b/**"])  # a bad pattern lists nothing
