"""`dicom-transfer migrate` between two real Orthanc servers, checked through Orthanc's REST API."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time

import pytest
from conftest import CLI, REPO, run_cli_in_process, run_cli_subprocess
from servers import FaultProxy, Orthanc, random_faults

from dicom_transfer.sample import instance_bytes, uid_for


def digests(files: dict[str, bytes]) -> dict[str, str]:
    return {sop: hashlib.sha256(data).hexdigest() for sop, data in files.items()}


class Source:
    """An Orthanc loaded with 3 studies x 2 series x 3 small instances, and what it holds."""

    def __init__(self, server: Orthanc) -> None:
        self.server = server
        self.instances: dict[tuple[str, str, str], bytes] = {}
        for st in range(3):
            for se in range(2):
                for n in range(3):
                    uids = (uid_for("migrate", st), uid_for("migrate", st, se), uid_for("migrate", st, se, n))
                    data = instance_bytes(*uids, instance_number=n + 1, pixel_bytes=2048 + 512 * n)
                    server.upload(data)
                    self.instances[uids] = data

    def select(self, study=None, series=None, sop=None) -> dict[str, str]:
        """SOP Instance UID -> SHA-256 of the selected instances."""
        return digests({k[2]: v for k, v in self.instances.items()
                        if (study is None or k[0] == study) and (series is None or k[1] == series)
                        and (sop is None or k[2] == sop)})

    def studies(self) -> list[str]:
        return sorted({k[0] for k in self.instances})

    def series_of(self, study: str) -> list[str]:
        return sorted({k[1] for k in self.instances if k[0] == study})

    def sops_of(self, series: str) -> list[str]:
        return sorted(k[2] for k in self.instances if k[1] == series)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    server = Orthanc(tmp_path_factory.mktemp("orthanc-source")).start()
    yield Source(server)
    server.stop()


@pytest.fixture(scope="module")
def destination_server(tmp_path_factory):
    server = Orthanc(tmp_path_factory.mktemp("orthanc-destination")).start()
    yield server
    server.stop()


@pytest.fixture
def destination(destination_server):
    """The destination Orthanc, emptied for each test."""
    destination_server.delete_instances()
    return destination_server


def held(server: Orthanc) -> dict[str, str]:
    return digests(server.stored_files())


def test_each_selection_form_moves_exactly_the_selected_instances(source, destination, migrate_cli, tmp_path):
    first, second, third = source.studies()
    series = source.series_of(second)[1]
    third_series = source.series_of(third)[0]
    sop = source.sops_of(third_series)[2]
    urls = ("--source-dicomweb-url", source.server.dicomweb, "--dicomweb-url", destination.dicomweb)

    run = migrate_cli(*urls, "--identifier", first, "--identifier", f"{second}/{series}",
                      "--identifier", f"{third}/{third_series}/{sop}")
    expected = {**source.select(first), **source.select(second, series), **source.select(third, sop=sop)}
    assert run.status == 0, run.out
    assert held(destination) == expected
    assert (run.counter["success"], run.counter["unchanged"], run.counter["failure"]) == (len(expected), 0, 0)
    assert run.summary["type"] == "migrate"
    assert run.counter["bytesWritten"] == sum(len(v) for k, v in source.instances.items() if k[2] in expected)

    destination.delete_instances()
    listed = tmp_path / "ids.txt"
    listed.write_text(f"# one series\n{second}/{series}\n")
    run = migrate_cli(*urls, "--identifiers-file", str(listed))
    assert run.status == 0 and held(destination) == source.select(second, series)

    destination.delete_instances()
    wanted = tmp_path / "filter.txt"
    wanted.write_text(f"/studies/{third}\n/studies/{first}/series/{source.series_of(first)[0]}\n")
    run = migrate_cli(*urls, "--filter-file", str(wanted))
    assert run.status == 0
    assert held(destination) == {**source.select(third), **source.select(first, source.series_of(first)[0])}


def test_all_then_rerun_moves_nothing_and_deleted_instances_come_back(source, destination, migrate_cli,
                                                                       monkeypatch):
    import dicom_transfer.io.dicomweb as dicomweb

    monkeypatch.setattr(dicomweb, "PAGE_SIZE", 2)  # several QIDO-RS pages on both servers
    urls = ("--source-dicomweb-url", source.server.dicomweb, "--dicomweb-url", destination.dicomweb)
    total = len(source.instances)
    first = migrate_cli(*urls, "--all", "--max-instances-per-request", "2")
    assert first.status == 0 and first.counter["success"] == total
    assert held(destination) == source.select()

    again = migrate_cli(*urls, "--all")
    assert (again.counter["success"], again.counter["unchanged"], again.counter["failure"]) == (0, total, 0)

    deleted = sorted(source.select())[::5]  # 4 instances, in 3 series
    destination.delete_instances(set(deleted))
    third = migrate_cli(*urls, "--all")
    assert (third.counter["success"], third.counter["unchanged"]) == (len(deleted), total - len(deleted))
    assert held(destination) == source.select()


def faults_and_truncations(seed: int):
    """random_faults, plus every 7th GET answer cut in half."""
    faults = random_faults(0.25, seed=seed)

    def plan(number, method, path, body):
        if method == "GET" and number % 7 == 0 and number <= 400:
            return ("truncate", 0.5)
        return faults(number, method, path, body)

    return plan


def test_faults_on_both_sides_lose_nothing_and_report_nothing_spurious(source, destination, migrate_cli):
    reader = FaultProxy(source.server.url, plan=faults_and_truncations(5)).start()
    writer = FaultProxy(destination.url, plan=faults_and_truncations(6)).start()
    try:
        run = migrate_cli("--source-dicomweb-url", reader.dicomweb(), "--dicomweb-url", writer.dicomweb(),
                          "--all", "--max-instances-per-request", "3", "--max-attempts", "10",
                          "--source-max-attempts", "10", "--verify-bytes")
    finally:
        reader.stop()
        writer.stop()
    assert reader.faults >= 3 and writer.faults >= 3
    assert run.status == 0, run.errors
    assert run.errors == []
    assert run.counter["success"] == len(source.instances)
    assert destination.count_instances() == len(source.instances)  # nothing twice, nothing else
    assert held(destination) == source.select()


def test_sigkill_mid_run_then_the_same_command_completes(source, destination, tmp_path):
    slow = {"on": True}  # stores are slow until the kill, so that it comes mid-run
    slow_stores = FaultProxy(destination.url, plan=lambda n, method, p, b: ("slow", 0.6)
                             if method == "POST" and slow["on"] else None).start()
    command = ["migrate", "--source-dicomweb-url", source.server.dicomweb, "--dicomweb-url",
               slow_stores.dicomweb(), "--all", "--max-instances-per-request", "1", "--concurrency", "1",
               "--errors", str(tmp_path / "e.log"), "--summary", str(tmp_path / "s.json")]
    try:
        process = subprocess.Popen([*CLI, *command], cwd=REPO, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        while destination.count_instances() < 3 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        arrived = destination.count_instances()
        assert 3 <= arrived < len(source.instances), "the kill should come mid-run"
        slow["on"] = False
        result = run_cli_subprocess(*command)
    finally:
        slow_stores.stop()
    assert result.returncode == 0, result.stderr
    assert held(destination) == source.select()
    counter = json.loads((tmp_path / "s.json").read_text())["counter"]
    assert counter["unchanged"] >= arrived and counter["success"] + counter["unchanged"] == len(source.instances)


def test_different_credentials_on_each_side_and_no_secret_in_any_output(source, destination, tmp_path):
    secured = Orthanc(tmp_path / "secured", users={"reader": "basic-s3cret"}).start()
    guarded = FaultProxy(destination.url, bearer="bearer-s3cret").start()
    try:
        study = source.studies()[0]
        for (st, _, _), data in source.instances.items():
            if st == study:
                secured.upload(data)
        reports = ["--errors", str(tmp_path / "e.log"), "--summary", str(tmp_path / "s.json")]
        base = ["migrate", "--source-dicomweb-url", secured.dicomweb, "--source-username", "reader",
                "--dicomweb-url", guarded.dicomweb(), "--all", "-v", *reports]
        env = {"SOURCE_DICOMWEB_PASSWORD": "basic-s3cret", "DICOMWEB_TOKEN": "bearer-s3cret"}
        swapped = run_cli_subprocess(*base, env={"SOURCE_DICOMWEB_PASSWORD": "bearer-s3cret",
                                                 "DICOMWEB_TOKEN": "basic-s3cret"})
        result = run_cli_subprocess(*base, env=env)
    finally:
        secured.stop()
        guarded.stop()
    assert swapped.returncode == 2 and "cannot use" in swapped.stderr
    assert result.returncode == 0, result.stderr
    assert held(destination) == source.select(study)
    outputs = [swapped.stdout, swapped.stderr, result.stdout, result.stderr,
               (tmp_path / "e.log").read_text(), (tmp_path / "s.json").read_text()]
    for secret in ("basic-s3cret", "bearer-s3cret"):
        assert not any(secret in text for text in outputs), secret


def test_an_instance_the_destination_refuses_is_one_failure_and_its_neighbours_arrive(source, destination,
                                                                                     migrate_cli):
    study = source.studies()[1]
    series = source.series_of(study)[0]
    culprit = source.sops_of(series)[1]

    def refuse_culprit(number, method, path, body):
        if method == "POST" and body and culprit.encode() in body:
            return ("status", 400, {}, b"cannot store this one")
        return None

    refusing = FaultProxy(destination.url, plan=refuse_culprit).start()
    try:
        run = migrate_cli("--source-dicomweb-url", source.server.dicomweb, "--dicomweb-url", refusing.dicomweb(),
                          "--identifier", study)
    finally:
        refusing.stop()
    assert run.status == 1
    assert [e["Identifier"] for e in run.errors] == [f"{study}/{series}/{culprit}"]
    assert "400" in run.errors[0]["Error"] and run.errors[0]["Stage"] == "store"
    expected = source.select(study)
    del expected[culprit]
    assert held(destination) == expected
    assert (run.counter["success"], run.counter["failure"]) == (len(expected), 1)


def test_dry_run_counts_what_would_move_and_touches_nothing(source, destination, migrate_cli, tmp_path):
    study = source.studies()[2]
    series = source.series_of(study)[0]
    present = source.sops_of(series)[0]
    destination.upload(next(v for k, v in source.instances.items() if k[2] == present))
    seen = []
    watched = FaultProxy(destination.url, plan=lambda n, method, path, b: seen.append(method)).start()
    try:
        run = migrate_cli("--source-dicomweb-url", source.server.dicomweb, "--dicomweb-url", watched.dicomweb(),
                          "--identifier", study, "--dry-run", "--log-file", str(tmp_path / "log"))
    finally:
        watched.stop()
    moving = {k: v for k, v in source.instances.items() if k[0] == study and k[2] != present}
    assert run.status == 0
    assert (run.counter["success"], run.counter["unchanged"]) == (len(moving), 1)
    assert run.counter["bytesWritten"] == sum(len(v) for v in moving.values())
    assert set(seen) == {"GET"}
    assert held(destination) == source.select(sop=present)
    assert "would be migrated" in run.out
    listed = (tmp_path / "log").read_text()
    assert f"series {study}/{series}: 2 of 3 instances would be migrated" in listed
    assert f"series {study}/{source.series_of(study)[1]}: 3 of 3 instances would be migrated" in listed


def test_verify_bytes_reports_an_instance_the_destination_returns_altered(source, destination, migrate_cli):
    study = source.studies()[0]
    series = source.series_of(study)[1]
    altered = source.sops_of(series)[0]

    def tamper(number, method, path, body):
        if method == "GET" and path.endswith(f"/instances/{altered}"):
            part = b"--b\r\nContent-Type: application/dicom\r\n\r\nnot the bytes sent\r\n--b--\r\n"
            return ("status", 200, {"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'},
                    part)
        return None

    lying = FaultProxy(destination.url, plan=tamper).start()
    try:
        run = migrate_cli("--source-dicomweb-url", source.server.dicomweb, "--dicomweb-url", lying.dicomweb(),
                          "--identifier", f"{study}/{series}", "--verify-bytes")
    finally:
        lying.stop()
    assert run.status == 1
    record = run.error_for(altered)
    assert record["Stage"] == "verify" and "other bytes" in record["Error"]
    assert run.counter["success"] == len(source.sops_of(series)) - 1


def test_invalid_invocations_exit_2(source, destination, capsys):
    same = run_cli_in_process(capsys, "migrate", "--source-dicomweb-url", destination.dicomweb,
                              "--dicomweb-url", destination.dicomweb, "--all")
    assert same.returncode == 2 and "same server" in same.stderr
    wrong = run_cli_in_process(capsys, "migrate", "--source-dicomweb-url", source.server.dicomweb,
                               "--dicomweb-url", destination.dicomweb, "--all", "--transfer-syntax", "*")
    assert wrong.returncode == 2 and "--transfer-syntax" in wrong.stderr


# -- the pure decisions, without servers ---------------------------------------------------------

def test_plan_moves_only_what_the_destination_lacks():
    from dicom_transfer.migration import plan_series, still_missing

    plan = plan_series("1.2", "1.2.3", [("1.5", True), ("1.4", True), ("1.6", True), ("1.4", False)],
                       held=["1.4", "9.9"])
    assert (plan.wanted, plan.present, plan.missing) == (("1.4", "1.5", "1.6"), frozenset({"1.4"}), ("1.5", "1.6"))
    assert plan.whole and plan.fetch_whole_series  # 2 of 3 missing: one series answer
    assert not plan_series("1.2", "1.2.3", [(s, True) for s in "abcd"], held="abc").fetch_whole_series
    assert not plan_series("1.2", "1.2.3", [("a", False), ("b", False)], held=[]).fetch_whole_series
    assert not plan_series("1.2", "1.2.3", [("a", True)], held=["a"]).fetch_whole_series
    assert still_missing(["b", "a", "c"], ["c"]) == ["a", "b"]


def test_request_batches_respect_both_limits_and_a_large_instance_goes_alone():
    from collections import namedtuple

    from dicom_transfer.stow import RequestBatcher, plan_requests

    item = namedtuple("item", "name size")
    sizes = [item(n, s) for n, s in enumerate([10, 10, 10, 50, 10, 10, 10, 10])]
    assert [[i.name for i in r] for r in plan_requests(sizes, 3, 40)] == [[0, 1, 2], [3], [4, 5, 6], [7]]
    batcher = RequestBatcher(3, 40)
    streamed = [full for i in sizes if (full := batcher.add(i))] + [batcher.flush()]
    assert streamed == plan_requests(sizes, 3, 40) and batcher.flush() is None


def test_an_instance_reported_stored_but_absent_is_a_verify_failure(source, destination, migrate_cli):
    study = source.studies()[2]
    series = source.series_of(study)[1]
    lost = source.sops_of(series)[2]

    def swallow(number, method, path, body):  # answers success without passing the request on
        if method == "POST" and body and lost.encode() in body:
            return ("status", 200, {"Content-Type": "application/dicom+json"}, b"{}")
        return None

    swallowing = FaultProxy(destination.url, plan=swallow).start()
    try:
        run = migrate_cli("--source-dicomweb-url", source.server.dicomweb, "--dicomweb-url",
                          swallowing.dicomweb(), "--identifier", f"{study}/{series}",
                          "--max-instances-per-request", "1")
    finally:
        swallowing.stop()
    assert run.status == 1
    record = run.error_for(lost)
    assert record["Stage"] == "verify" and "does not hold it" in record["Error"]
    assert set(held(destination)) == set(source.sops_of(series)) - {lost}


def test_a_private_ca_on_the_source_side_only(source, destination, migrate_cli, tmp_path):
    from servers import self_signed_certificate

    certificate, key = self_signed_certificate(tmp_path)
    private = FaultProxy(source.server.url, tls=(certificate, key)).start()
    try:
        study = source.studies()[0]
        series = source.series_of(study)[0]
        urls = ("--source-dicomweb-url", private.dicomweb(), "--dicomweb-url", destination.dicomweb,
                "--identifier", f"{study}/{series}")
        untrusted = migrate_cli(*urls)
        trusted = migrate_cli(*urls, "--source-ca-bundle", certificate)
    finally:
        private.stop()
    assert untrusted.status == 2
    assert trusted.status == 0 and held(destination) == source.select(study, series)


def test_worker_processes_migrate_everything(source, destination, migrate_cli):
    """The DoFn pickles, and the series still in flight at the end of a bundle are emitted by
    finish_bundle, in worker processes too."""
    run = migrate_cli("--source-dicomweb-url", source.server.dicomweb, "--dicomweb-url", destination.dicomweb,
                      "--all", "--direct_running_mode", "multi_processing", "--direct_num_workers", "2")
    assert run.status == 0, run.out
    assert (run.counter["success"], run.counter["failure"]) == (len(source.instances), 0)
    assert held(destination) == source.select()
