"""`dicom-transfer export` from a real Orthanc, with byte-for-byte checks."""

from __future__ import annotations

import hashlib
import json

import pytest
from servers import FaultProxy, Orthanc, first_answers_cut_off, random_faults

from dicom_transfer.sample import instance_bytes, uid_for


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Store:
    """What was loaded into the server: {(study, series, sop): bytes}."""

    def __init__(self) -> None:
        self.instances: dict[tuple[str, str, str], bytes] = {}

    def studies(self) -> list[str]:
        return sorted({k[0] for k in self.instances})

    def series_of(self, study: str) -> list[str]:
        return sorted({k[1] for k in self.instances if k[0] == study})

    def select(self, study=None, series=None, sop=None) -> dict[str, str]:
        """Expected relative uid-layout paths -> SHA-256."""
        return {f"{k[0]}/{k[1]}/{k[2]}.dcm": digest(v) for k, v in self.instances.items()
                if (study is None or k[0] == study) and (series is None or k[1] == series)
                and (sop is None or k[2] == sop)}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """An Orthanc holding 3 studies x 2-3 series, with multi-frame and MB-sized instances."""
    server = Orthanc(tmp_path_factory.mktemp("orthanc-export")).start()
    store = Store()
    for st in range(3):
        study = uid_for("export", st)
        for se in range(2 + st % 2):
            series = uid_for("export", st, se)
            for n in range(3):
                sop = uid_for("export", st, se, n)
                kwargs = {"pixel_bytes": 4096}
                if st == 0 and se == 0 and n == 0:
                    kwargs = {"pixel_bytes": 3 << 20}  # MB-sized
                if st == 1 and se == 1:
                    kwargs = {"pixel_bytes": 64 * 1024, "frames": 8}  # multi-frame
                data = instance_bytes(study, series, sop, instance_number=n + 1, patient_id=f"P{st}", **kwargs)
                server.upload(data)
                store.instances[(study, series, sop)] = data
    yield server, store
    server.stop()


def exported(root) -> dict[str, str]:
    return {str(p.relative_to(root)): digest(p.read_bytes()) for p in root.rglob("*.dcm")
            if ".dicom-transfer" not in p.parts}


@pytest.fixture
def export_cli(copy_cli, monkeypatch):
    """The copy_cli helper, pointed at the export command."""
    from dicom_transfer.pipelines import cli

    real_main = cli.main

    def export_main(argv):
        return real_main(["export", *argv[1:]])

    monkeypatch.setattr("conftest.main", export_main)
    return copy_cli


def test_export_by_each_identifier_form(loaded, export_cli, tmp_path):
    server, store = loaded
    study, other = store.studies()[0], store.studies()[1]
    series = store.series_of(other)[0]
    third = store.studies()[2]
    third_series = store.series_of(third)[0]
    sop = next(k[2] for k in store.instances if k[:2] == (third, third_series))
    out = tmp_path / "out"
    run = export_cli("--dicomweb-url", server.dicomweb, "--output", str(out),
                     "--identifier", study, "--identifier", f"{other}/{series}",
                     "--identifier", f"{third}/{third_series}/{sop}")
    assert run.status == 0, run.out
    expected = {**store.select(study), **store.select(other, series), **store.select(third, sop=sop)}
    assert exported(out) == expected
    assert run.counter["success"] == len(expected)
    assert run.summary["type"] == "export"
    assert run.summary["results"]["exported"] == len(expected) and run.summary["results"]["skipped"] == 0


def test_export_all_with_paging_then_rerun_is_unchanged(loaded, export_cli, tmp_path, monkeypatch):
    import dicom_transfer.io.dicomweb as dicomweb

    monkeypatch.setattr(dicomweb, "PAGE_SIZE", 2)  # force several QIDO-RS pages
    server, store = loaded
    out = tmp_path / "out"
    run = export_cli("--dicomweb-url", server.dicomweb, "--output", str(out), "--all")
    assert run.status == 0
    assert exported(out) == store.select()
    again = export_cli("--dicomweb-url", server.dicomweb, "--output", str(out), "--all")
    assert (again.counter["success"], again.counter["unchanged"]) == (0, len(store.instances))


def test_export_by_filter_file(loaded, export_cli, tmp_path):
    server, store = loaded
    study = store.studies()[1]
    series = store.series_of(study)[1]
    filter_file = tmp_path / "filter.txt"
    filter_file.write_text(f"/studies/{store.studies()[2]}\n/studies/{study}/series/{series}\n")
    out = tmp_path / "out"
    run = export_cli("--dicomweb-url", server.dicomweb, "--output", str(out), "--filter-file", str(filter_file))
    assert run.status == 0
    assert exported(out) == {**store.select(store.studies()[2]), **store.select(study, series)}


def test_unknown_identifiers_are_records_and_the_rest_goes_on(loaded, export_cli, tmp_path):
    server, store = loaded
    study = store.studies()[0]
    out = tmp_path / "out"
    missing_series = f"{study}/1.2.3.4"
    missing_sop = f"{study}/{store.series_of(study)[0]}/1.2.3.4.5"
    run = export_cli("--dicomweb-url", server.dicomweb, "--output", str(out), "--identifier", study,
                     "--identifier", "1.2.3", "--identifier", missing_series, "--identifier", missing_sop,
                     "--layout", "azure", operation_id="exp-op")
    assert run.status == 1
    errors = {e["Identifier"]: e["Error"] for e in run.errors}
    assert set(errors) == {"1.2.3", missing_series, missing_sop}
    assert "not found" in errors["1.2.3"] and "not found" in errors[missing_series]
    assert "not found" in errors[missing_sop]
    results = out / "exp-op" / "results"
    assert exported(results) == store.select(study)
    summary = json.loads((out / "exp-op" / "summary.json").read_text())
    assert summary["results"]["errorHref"] == str(out / "exp-op" / "errors.log")
    assert summary["results"]["skipped"] == 3 and summary["status"] == "completedWithErrors"


def test_malformed_or_empty_selections_stop_export_before_it_starts(loaded, export_cli, tmp_path):
    """One rule for every pipeline: a selection that cannot be right is refused up front (exit 2)."""
    server, store = loaded
    out = tmp_path / "out"
    run = export_cli("--dicomweb-url", server.dicomweb, "--output", str(out), "--identifier",
                     store.studies()[0], "--identifier", "1.2/x/3")
    assert run.status == 2 and not out.exists()
    assert "not a valid UID" in run.err
    (tmp_path / "ids.txt").write_text("# nothing but a comment\n\n")
    (tmp_path / "filter.txt").write_text(f"/studies/{store.studies()[0]}\n/studies/1.2/series/x\n")
    for option, path, words in (("--identifiers-file", "ids.txt", "names nothing"),
                                ("--filter-file", "filter.txt", "line 2")):
        run = export_cli("--dicomweb-url", server.dicomweb, "--output", str(out), option, str(tmp_path / path))
        assert run.status == 2 and not out.exists()
        assert words in run.err


def test_export_through_faults_delivers_everything_once(loaded, export_cli, tmp_path):
    server, store = loaded
    proxy = FaultProxy(server.url, plan=random_faults(0.3, seed=11, truncate=True)).start()
    try:
        out = tmp_path / "out"
        run = export_cli("--dicomweb-url", proxy.dicomweb(), "--output", str(out), "--all",
                         "--max-attempts", "8")
    finally:
        proxy.stop()
    assert proxy.faults >= 3
    assert run.status == 0, run.errors
    assert exported(out) == store.select()
    assert run.counter["success"] == len(store.instances)


def test_truncated_series_answer_falls_back_to_instances(loaded, export_cli, tmp_path):
    server, store = loaded
    study = store.studies()[0]
    series = store.series_of(study)[0]

    def cut_series(number, method, path, body):
        if method == "GET" and path.endswith(f"/series/{series}"):
            return ("truncate", 0.5)
        return None

    proxy = FaultProxy(server.url, plan=cut_series).start()
    try:
        out = tmp_path / "out"
        run = export_cli("--dicomweb-url", proxy.dicomweb(), "--output", str(out),
                         "--identifier", f"{study}/{series}")
    finally:
        proxy.stop()
    assert proxy.faults == 1
    assert run.status == 0
    assert exported(out) == store.select(study, series)
    assert not list(out.rglob("*.partial"))


def test_a_transfer_syntax_the_server_cannot_provide_is_one_record_per_instance_not_retried(
        loaded, export_cli, tmp_path):
    """Orthanc answers 500 for JPEG 2000 without its GDCM plugin: the same every time."""
    server, store = loaded
    study = store.studies()[2]
    series = store.series_of(study)[0]
    proxy = FaultProxy(server.url).start()
    try:
        run = export_cli("--dicomweb-url", proxy.dicomweb(), "--output", str(tmp_path / "out"),
                         "--identifier", f"{study}/{series}", "--transfer-syntax", "1.2.840.10008.1.2.4.90")
    finally:
        proxy.stop()
    wanted = store.select(study, series)
    assert run.status == 1
    assert run.counter["failure"] == len(wanted) == len(run.errors)
    assert all("cannot provide it" in e["Error"] for e in run.errors)
    # pre-run check + QIDO expansion + one WADO-RS request for the series: no retries, no per-instance refetch
    assert proxy.requests <= 6, proxy.requests


def test_answers_cut_off_are_retried_on_every_request_kind(loaded, export_cli, tmp_path):
    """The first answer to every request (the pre-run check, the study listing, each QIDO-RS and
    WADO-RS) announces its whole length, sends half, and closes: nothing may be lost."""
    server, store = loaded
    proxy = FaultProxy(server.url, plan=first_answers_cut_off()).start()
    try:
        run = export_cli("--dicomweb-url", proxy.dicomweb(), "--output", str(tmp_path / "out"), "--all")
    finally:
        proxy.stop()
    assert run.status == 0, run.errors
    assert exported(tmp_path / "out") == store.select()
    assert proxy.faults >= 1 + len(store.studies())  # the listing, the check and each study's QIDO at least
