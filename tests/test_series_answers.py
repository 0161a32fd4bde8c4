"""The store step's answers about finished series (dicom_transfer.series_answers), which settle a
series' reconciliation only when they name exactly the instances the manifest expects."""

from __future__ import annotations

import collections
import csv
import json
import os

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to
from conftest import local_pipeline
from servers import FaultProxy

from dicom_transfer.elements import FileRef
from dicom_transfer.io.dicomweb import DicomwebClient
from dicom_transfer.io.holdings import reconcile_with
from dicom_transfer.io.instances import validate_file
from dicom_transfer.sample import instance_bytes, uid_for, write_sample_set
from dicom_transfer.series_answers import HeldFingerprint, SeriesProgress, claimed, present_if_exact
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


def test_a_count_settles_a_series_only_if_it_says_nothing_else_is_held():
    assert claimed(set(), {"1.1", "1.2"}, 2) == {"1.1", "1.2"}  # a first load
    assert claimed({"1.1"}, {"1.1", "1.2"}, 2) == {"1.1", "1.2"}  # one held already, acknowledged again
    assert claimed({"1.0"}, {"1.1"}, 2) == {"1.0", "1.1"}  # held before the run, never sent
    assert claimed(set(), {"1.1", "1.2"}, 3) is None  # someone else stored one meanwhile: list it
    assert claimed({"1.0"}, {"1.1"}, 1) is None  # one gone: list it
    assert claimed(set(), {"1.1"}, None) is None  # the server's answer has no count


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
    _good_files(tmp_path, "series-answers-rerun", 3, 4)
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


def _is_count(method: str, path: str) -> bool:
    """A series-level QIDO-RS for one series (the store step's count)."""
    return method == "GET" and path.split("?")[0].endswith("/series") and "SeriesInstanceUID=" in path


def _good_files(tmp_path, seed: str, series: int, per_series: int):
    made = write_sample_set(str(tmp_path / "in"), studies=1, series_per_study=series, instances_per_series=per_series,
                            seed=seed)
    for path in made.bad:
        os.remove(path)
    return made


def _import_asked(orthanc, import_cli, tmp_path, plan=None, *options: str):
    """Import tmp_path/in through a proxy in front of ``orthanc`` that notes each series' questions
    (instance-level listings, series-level counts); ``plan`` may answer in Orthanc's place."""
    asked: dict[str, list[str]] = {"listed": [], "counted": []}

    def record(number, method, path, body):
        bare = path.split("?")[0]
        if method == "GET" and "/series/" in bare and bare.endswith("/instances"):
            asked["listed"].append(bare)
        elif _is_count(method, path):
            asked["counted"].append(path)
        return plan(number, method, path, body) if plan else None

    proxy = FaultProxy(orthanc.url, record).start()
    try:
        return import_cli("--input", f"{tmp_path}/in/**", "--dicomweb-url", proxy.dicomweb(), *options), asked
    finally:
        proxy.stop()


def test_series_count_is_what_orthanc_holds(orthanc, tmp_path):
    made = write_sample_set(str(tmp_path / "in"), studies=1, series_per_study=2, instances_per_series=3,
                            seed="series-count")
    first = made.valid[0]
    for instance in made.valid:
        if instance.series_uid == first.series_uid:
            with open(instance.path, "rb") as handle:
                orthanc.upload(handle.read())
    client = DicomwebClient(orthanc.dicomweb)
    assert client.series_count(first.study_uid, first.series_uid) == 3
    other = next(i for i in made.valid if i.series_uid != first.series_uid)
    assert client.series_count(other.study_uid, other.series_uid) == 0  # known study, unknown series
    assert client.series_count(uid_for("series-count", "no-study"), other.series_uid) == 0


def test_first_load_lists_no_series_after_sending_it(orthanc, import_cli, tmp_path):
    """On a first load the store step proves each series by its count (one cheap series-level
    question), not by listing it again: Orthanc reads every stored file to list a series."""
    _good_files(tmp_path, "series-answers-count", 3, 4)
    run, asked = _import_asked(orthanc, import_cli, tmp_path)
    assert (run.status, run.counter["success"]) == (0, 12)
    assert run.summary["reconciliation"]["complete"] == 3
    # each series listed once, by the existence check (empty then), and counted once afterwards
    assert sorted(collections.Counter(asked["listed"]).values()) == [1, 1, 1]
    assert len(asked["counted"]) == 3


def test_an_instance_stored_by_someone_else_during_the_run_is_found_by_listing(orthanc, import_cli, tmp_path):
    """The count then says more than the run sent: the series is listed, and the stranger reported."""
    first = _good_files(tmp_path, "series-answers-stranger", 2, 3).valid[0]
    stranger = uid_for("series-answers-stranger", "stranger")
    planted: list[int] = []

    def plant(number, method, path, body):  # after the existence check, with the first request
        if method == "POST" and not planted:
            planted.append(number)
            orthanc.upload(instance_bytes(first.study_uid, first.series_uid, stranger))

    run, asked = _import_asked(orthanc, import_cli, tmp_path, plant)
    assert run.counter["success"] == 6 and planted
    assert run.summary["reconciliation"]["instancesExtra"] == 1
    with open(run.report_dir / "reconciliation.csv", newline="") as source:
        rows = {row["SeriesInstanceUID"]: row for row in csv.DictReader(source) if row["level"] == "series"}
    assert rows[first.series_uid]["extraSOPInstanceUIDs"] == stranger
    # the series with the stranger was listed after its count disagreed; the other was not
    listed = collections.Counter(path.split("/series/")[1].split("/")[0] for path in asked["listed"])
    assert listed[first.series_uid] >= 2
    assert [n for series, n in listed.items() if series != first.series_uid] == [1]


def test_a_server_that_gives_no_count_has_each_series_listed(orthanc, import_cli, tmp_path):
    _good_files(tmp_path, "series-answers-nocount", 2, 3)

    def no_count(number, method, path, body):  # a series without NumberOfSeriesRelatedInstances
        if _is_count(method, path):
            series = path.split("SeriesInstanceUID=")[1].split("&")[0]
            return ("status", 200, {"Content-Type": "application/dicom+json"},
                    json.dumps([{"0020000E": {"vr": "UI", "Value": [series]}}]).encode())
        return None

    run, asked = _import_asked(orthanc, import_cli, tmp_path, no_count)
    assert (run.status, run.counter["success"]) == (0, 6)
    assert run.summary["reconciliation"]["complete"] == 2
    assert sorted(collections.Counter(asked["listed"]).values()) == [2, 2]  # existence check, then listed


@pytest.mark.parametrize(("body", "expected"), [
    ([], 0),
    ([{"0020000E": {"vr": "UI", "Value": ["{series}"]}, "00201209": {"vr": "IS", "Value": [3]}}], 3),
    ([{"00201209": {"vr": "IS", "Value": ["3"]}}], 3),  # IS as a string; the series UID left out
    ([{"0020000E": {"vr": "UI", "Value": ["1.2.3"]}, "00201209": {"vr": "IS", "Value": [3]}}], None),  # another
    ([{"00201209": {"vr": "IS", "Value": [1]}}, {"00201209": {"vr": "IS", "Value": [2]}}], None),  # two series
    ([{"00201209": {"vr": "IS", "Value": [3.7]}}], None),
    ([{"00201209": {"vr": "IS", "Value": [True]}}], None),
    ([{"00201209": {"vr": "IS", "Value": [-1]}}], None),
    ([{"00201209": {"vr": "IS"}}], None),
    ({"a": 1}, None),
    (["x"], None),
    ([{"0020000E": "1.2"}], None),
], ids=["none", "count", "string", "other-series", "two", "fraction", "bool", "negative", "empty", "object",
        "not-items", "not-dicom-json"])
def test_series_count_takes_only_a_count_of_that_series(orthanc, body, expected):
    """Whatever a server answers, the count is a whole number of that series or None (then the
    series is listed): an odd answer never ends a run whose instances were all sent."""
    study, series = uid_for("odd-count", "study"), uid_for("odd-count", "series")
    text = json.dumps(body).replace("{series}", series).encode()
    proxy = FaultProxy(orthanc.url, lambda number, method, path, _: (
        ("status", 200, {"Content-Type": "application/dicom+json"}, text) if "/series?" in path else None)).start()
    try:
        assert DicomwebClient(proxy.dicomweb()).series_count(study, series) == expected
    finally:
        proxy.stop()


def test_a_server_that_refuses_counts_is_asked_once_and_each_series_listed(orthanc, import_cli, tmp_path):
    _good_files(tmp_path, "series-answers-refused", 3, 2)

    def refuse(number, method, path, body):
        if _is_count(method, path):
            return ("status", 400, {"Content-Type": "text/plain"}, b"series-level queries not supported")
        return None

    # one question at a time (the questions of one bundle's end share the STOW-RS threads)
    run, asked = _import_asked(orthanc, import_cli, tmp_path, refuse, "--concurrency", "1")
    assert (run.status, run.counter["success"]) == (0, 6)
    assert run.summary["reconciliation"]["complete"] == 3
    assert len(asked["counted"]) == 1  # refused once: not asked again
    assert sorted(collections.Counter(asked["listed"]).values()) == [2, 2, 2]


def test_a_count_cut_off_mid_answer_has_the_series_listed(orthanc, import_cli, tmp_path):
    """A count whose answer is cut off every time (after the retries) is no count: the series is
    listed instead, and the run ends complete, with what was sent."""
    _good_files(tmp_path, "series-answers-cut", 2, 3)

    def cut(number, method, path, body):
        return ("truncate", 0.5) if _is_count(method, path) else None

    run, asked = _import_asked(orthanc, import_cli, tmp_path, cut, "--max-attempts", "2")
    assert (run.status, run.counter["success"]) == (0, 6)
    assert run.summary["reconciliation"]["complete"] == 2
    assert len(asked["counted"]) == 4  # each series' count tried twice
    assert sorted(collections.Counter(asked["listed"]).values()) == [2, 2]  # existence check, then listed
