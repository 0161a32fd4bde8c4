"""The store step's answers about finished series (dicom_transfer.series_answers), which settle a
series' reconciliation only when they name exactly the instances the manifest expects."""

from __future__ import annotations

import collections
import os

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to
from conftest import local_pipeline
from servers import FaultProxy

from dicom_transfer.elements import FileRef
from dicom_transfer.io.dicomweb import DicomwebClient
from dicom_transfer.io.holdings import reconcile_with
from dicom_transfer.io.instances import validate_file
from dicom_transfer.sample import instance_bytes, uid_for, write_sample_set
from dicom_transfer.series_answers import HeldFingerprint, SeriesProgress, present_if_exact
from dicom_transfer.transforms.manifest import DicomwebCheck
from dicom_transfer.transforms.store import StoreInstances


def line(sop: str, outcome: str = "success") -> dict:
    return {"SOPInstanceUID": sop, "outcome": outcome, "size": 10}


def test_fingerprint_ignores_order_and_repeats_but_not_content():
    assert HeldFingerprint.of(["1.2", "1.3"]) == HeldFingerprint.of(["1.3", "1.2", "1.3"])
    assert HeldFingerprint.of(["1.2", "1.3"]) != HeldFingerprint.of(["1.2", "1.4"])
    assert HeldFingerprint.of(["1.2"]) != HeldFingerprint.of(["1.2", "1.3"])
    assert HeldFingerprint.of(["1.2", "1.3"]).count == 2


def test_an_earlier_answer_counts_only_if_it_names_exactly_the_expected_instances():
    lines = [line("1.1"), line("1.2", "unchanged"), line("1.3", "failure"), line("1.9", "filtered")]
    expected = {"1.1", "1.2", "1.3"}  # a failure is expected too (missing unless held); filtered is not
    assert present_if_exact(lines, [HeldFingerprint.of(expected)]) == dict.fromkeys(expected)
    # any of several answers (another worker's, an earlier one) may settle it
    assert present_if_exact(lines, [HeldFingerprint.of({"1.1"}), HeldFingerprint.of(expected)]) is not None
    assert present_if_exact(lines, []) is None
    assert present_if_exact(lines, [HeldFingerprint.of({"1.1", "1.2"})]) is None  # asked too early
    assert present_if_exact(lines, [HeldFingerprint.of(expected | {"1.9"})]) is None  # something else held


class _Asked:
    """A check that counts the questions asked of it."""

    per_series = True

    def __init__(self, held: set[str]) -> None:
        self.held = held
        self.questions = 0

    def present(self, study, series, lines):
        self.questions += 1
        return dict.fromkeys(self.held)


def test_reconciliation_asks_again_unless_the_earlier_answer_is_exact():
    lines = [line("1.1"), line("1.2")]
    exact, stray = _Asked({"1.1", "1.2"}), _Asked({"1.1", "1.2", "1.7"})
    row = reconcile_with(exact, "s", "se", lines, earlier=[HeldFingerprint.of({"1.1", "1.2"})])
    assert (exact.questions, row.present, row.missing, row.extra) == (0, 2, [], [])
    # the answer the store step got missed an instance that arrived later: asked again, and the
    # instance the run did not send is reported as it always was
    row = reconcile_with(stray, "s", "se", lines, earlier=[HeldFingerprint.of({"1.1"})])
    assert (stray.questions, row.present, row.missing, row.extra) == (1, 2, [], ["1.7"])


def test_series_are_asked_about_once_their_requests_are_answered():
    a, b, c = ("st", "a"), ("st", "b"), ("st", "c")
    progress = SeriesProgress()
    progress.sending({a})
    progress.sending({a, b})
    progress.sending({c})
    assert progress.done() == []  # nothing answered yet
    progress.answered({a})
    assert progress.done() == []  # a still has a request in flight
    progress.answered({a, b})
    assert progress.done() == [a, b]
    assert progress.done() == []  # each once
    progress.answered({c})
    assert progress.done() == [c]
    progress.sending({a})  # sent to again (another bundle): asked again
    progress.answered({a})
    assert progress.done() == [a]


def test_store_step_answers_what_the_server_holds_of_each_series(orthanc, tmp_path):
    made = write_sample_set(str(tmp_path / "in"), studies=1, series_per_study=3, instances_per_series=5,
                            seed="series-answers")
    first = made.valid[0]
    stray = uid_for("series-answers", "stray")  # held before the run, never sent by it
    orthanc.upload(instance_bytes(first.study_uid, first.series_uid, stray))
    instances = [validate_file(FileRef(i.path, os.path.getsize(i.path))) for i in made.valid]
    expected = {}
    for i in made.valid:
        expected.setdefault((i.study_uid, i.series_uid), set()).add(i.sop_uid)
    expected[(first.study_uid, first.series_uid)].add(stray)
    with local_pipeline() as pipeline:
        stored = (pipeline | beam.Create(instances)
                  | StoreInstances(DicomwebClient(orthanc.dicomweb), max_instances=2, concurrency=2,
                                   answer_series=True))
        assert stored.answers is not None
        last = stored.answers | beam.CombinePerKey(lambda answers: max(answers, key=lambda a: a.count))
        assert_that(last, equal_to([(key, HeldFingerprint.of(uids)) for key, uids in expected.items()]))
    # the reconciliation of the series with the stray instance cannot use that answer
    lines = [line(i.sop_uid) for i in made.valid if i.series_uid == first.series_uid]
    row = reconcile_with(DicomwebCheck(DicomwebClient(orthanc.dicomweb)), first.study_uid, first.series_uid,
                         lines, earlier=[HeldFingerprint.of(expected[(first.study_uid, first.series_uid)])])
    assert (row.present, row.missing, row.extra) == (5, [], [stray])


def test_rerun_asks_the_server_about_each_series_once(orthanc, import_cli, tmp_path):
    """On a re-run nothing is sent: the existence check's answer settles the reconciliation, and
    Orthanc does not read the series' files a second time."""
    made = write_sample_set(str(tmp_path / "in"), studies=1, series_per_study=3, instances_per_series=4,
                            seed="series-answers-rerun")
    for path in made.bad:
        os.remove(path)
    asked: list[str] = []

    def record(number, method, path, body):
        path = path.split("?")[0]
        if method == "GET" and "/series/" in path and path.endswith("/instances"):
            asked.append(path)

    proxy = FaultProxy(orthanc.url, record).start()
    try:
        first = import_cli("--input", f"{tmp_path}/in/**", "--dicomweb-url", proxy.dicomweb())
        assert (first.status, first.counter["success"]) == (0, 12)
        asked.clear()
        again = import_cli("--input", f"{tmp_path}/in/**", "--dicomweb-url", proxy.dicomweb())
    finally:
        proxy.stop()
    assert (again.status, again.counter["unchanged"]) == (0, 12)
    assert again.summary["reconciliation"]["complete"] == 3
    assert sorted(collections.Counter(asked).values()) == [1, 1, 1]
