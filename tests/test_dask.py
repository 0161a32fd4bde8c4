"""The pipelines on Dask: a real dask.distributed cluster with 2 worker processes, compared with
the DirectRunner on the same inputs: the same bytes, the same counters, the same error records."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, interrupt_at_first_output, tree
from servers import Orthanc

from dicom_transfer.pipelines.cli import main
from dicom_transfer.sample import instance_bytes, uid_for, write_sample_set

pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def dask_cluster():
    """The scheduler's address; the cluster (its own process group) is stopped by its PID."""
    process = subprocess.Popen([sys.executable, str(REPO / "tests" / "dask_cluster.py")], stdout=subprocess.PIPE,
                               text=True, cwd=REPO, start_new_session=True)
    address = process.stdout.readline().strip()
    assert address.startswith("tcp://127.0.0.1:"), address
    yield address
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def dask(address: str) -> list[str]:
    return ["--runner", "DaskRunner", "--dask_client_address", address]


def run(*argv: str) -> tuple[int, dict, list[tuple[str, str]]]:
    """Run the CLI in-process; return its status, summary and ``(Identifier, Error)`` records."""
    args = list(argv)
    status = main(args)
    summary_path = Path(args[args.index("--summary") + 1])
    errors_path = Path(args[args.index("--errors") + 1])
    records = sorted((r["Identifier"], r["Error"]) for r in map(json.loads, errors_path.read_text().splitlines()))
    return status, json.loads(summary_path.read_text()), records


def reports(folder: Path, name: str) -> list[str]:
    return ["--errors", str(folder / f"{name}.errors.log"), "--summary", str(folder / f"{name}.summary.json"),
            "--operation-id", name, "-q"]


def counts(summary: dict) -> dict:
    return {k: v for k, v in summary["counter"].items()}


def manifest_lines(path: Path) -> list[tuple]:
    """What the manifest says of each instance, without the run's destination and times."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return sorted((line["source"], line["SOPInstanceUID"], line["outcome"], line["size"],
                   json.dumps(line["checksum"])) for line in lines)


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*.dcm")
            if ".dicom-transfer" not in p.parts}


def test_copy_on_dask_matches_the_direct_runner_then_reruns_unchanged(dask_cluster, tmp_path, capsys):
    sample = write_sample_set(str(tmp_path / "in"), studies=2, series_per_study=2, instances_per_series=3)
    pattern = f"{tmp_path}/in/**"
    direct = run("copy", "--input", pattern, "--output", str(tmp_path / "direct"), *reports(tmp_path, "direct"))
    on_dask = run("copy", "--input", pattern, "--output", str(tmp_path / "dask"), *reports(tmp_path, "dask"),
                  *dask(dask_cluster))
    assert on_dask[0] == direct[0] == 1  # the sample's bad files fail, the rest is written
    assert digests(tmp_path / "dask") == digests(tmp_path / "direct")
    assert len(tree(tmp_path / "dask")) >= len(sample.valid) == 12
    assert counts(on_dask[1]) == counts(direct[1])
    assert on_dask[1]["counter"]["success"] == 12 and on_dask[1]["counter"]["failure"] == len(sample.bad)
    assert on_dask[2] == direct[2] and len(on_dask[2]) == len(sample.bad)
    # every DoFn ran once per element: one manifest line per input, no part file left behind
    manifests = {name: manifest_lines(Path(summary["results"]["manifestHref"]))
                 for name, summary in (("direct", direct[1]), ("dask", on_dask[1]))}
    assert manifests["dask"] == manifests["direct"] and len(manifests["dask"]) == 12 + len(sample.bad)
    assert not list((tmp_path / "dask").rglob("*.part"))
    again = run("copy", "--input", pattern, "--output", str(tmp_path / "dask"), *reports(tmp_path, "again"),
                *dask(dask_cluster))
    assert again[1]["counter"]["unchanged"] == 12 and again[1]["counter"]["success"] == 0


@pytest.fixture(scope="module")
def orthancs(tmp_path_factory):
    servers = [Orthanc(tmp_path_factory.mktemp(f"orthanc-dask-{n}")).start() for n in range(3)]
    yield servers
    for server in servers:
        server.stop()


def test_import_export_and_migrate_on_dask(dask_cluster, orthancs, tmp_path, capsys):
    """import into one Orthanc, export it back, migrate it to another: all on Dask, checked
    against what the DirectRunner writes and against the servers' own contents."""
    first, second, third = orthancs
    made = {}
    for series in range(2):
        for n in range(4):
            uids = (uid_for("dask", 0), uid_for("dask", 0, series), uid_for("dask", 0, series, n))
            made[uids] = instance_bytes(*uids, instance_number=n + 1, pixel_bytes=4096 + 512 * n)
            path = tmp_path / "in" / f"{series}-{n}.dcm"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(made[uids])
    (tmp_path / "in" / "broken.dcm").write_bytes(b"not DICOM")

    status, summary, records = run("import", "--input", str(tmp_path / "in"), "--dicomweb-url", first.dicomweb,
                                   *reports(tmp_path, "import"), *dask(dask_cluster))
    assert status == 1 and summary["counter"]["success"] == 8 and summary["counter"]["failure"] == 1
    assert [identifier.rsplit("/", 1)[-1] for identifier, _ in records] == ["broken.dcm"]
    assert first.count_instances() == 8
    status, summary, _ = run("import", "--input", str(tmp_path / "in"), "--dicomweb-url", first.dicomweb,
                             *reports(tmp_path, "import-again"), *dask(dask_cluster))
    assert summary["counter"]["unchanged"] == 8 and summary["counter"]["success"] == 0

    exports = {}
    for name, extra in (("direct", []), ("dask", dask(dask_cluster))):
        out = tmp_path / f"export-{name}"
        status, summary, _ = run("export", "--dicomweb-url", first.dicomweb, "--all", "--output", str(out),
                                 *reports(tmp_path, f"export-{name}"), *extra)
        assert status == 0 and summary["counter"]["success"] == 8
        exports[name] = digests(out)
    assert exports["dask"] == exports["direct"]
    assert sorted(exports["dask"].values()) == sorted(hashlib.sha256(d).hexdigest() for d in made.values())

    status, summary, _ = run("migrate", "--source-dicomweb-url", first.dicomweb, "--dicomweb-url", second.dicomweb,
                             "--all", *reports(tmp_path, "migrate"), *dask(dask_cluster))
    assert status == 0 and summary["counter"]["success"] == 8
    assert second.count_instances() == 8
    assert sorted(second.stored_files().values()) == sorted(made.values())
    status, summary, _ = run("migrate", "--source-dicomweb-url", first.dicomweb, "--dicomweb-url", third.dicomweb,
                             "--all", *reports(tmp_path, "migrate-direct"))
    assert third.count_instances() == 8 and summary["counter"]["success"] == 8


def _mark_worker(element: tuple[int, list[int]], folder: str) -> None:
    Path(folder, f"{element[0]}.{os.getpid()}").touch()


def test_a_grouping_spreads_over_the_clusters_workers(dask_cluster, tmp_path):
    """A pipeline that starts from one element (one pattern) must not run as one task on one worker
    after its first grouping: each key group says which worker process handled it."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    options = PipelineOptions(["--runner", "DaskRunner", "--dask_client_address", dask_cluster])
    from dicom_transfer.pipelines.dask_runner import DaskRunner

    with beam.Pipeline(runner=DaskRunner(), options=options) as pipeline:
        _ = (pipeline | beam.Create(["one pattern"])
             | beam.FlatMap(lambda _: ((n % 40, n) for n in range(4000)))
             | beam.GroupByKey()
             | beam.Map(_mark_worker, str(tmp_path)))
    marks = [path.name.split(".") for path in tmp_path.iterdir()]
    assert sorted(int(key) for key, _ in marks) == list(range(40))  # every group once
    assert len({pid for _, pid in marks}) == 2  # both worker processes of the cluster


def test_ctrl_c_stops_a_dask_run_and_says_what_goes_on(dask_cluster, tmp_path):
    """The launcher stops at once (exit 130); the cluster starts none of the run's tasks after its
    client left, and those already running finish: every file that appears is complete."""
    write_sample_set(str(tmp_path / "in"), studies=3, series_per_study=4, instances_per_series=250,
                     bad_files=False)
    sources = {hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "in").rglob("*.dcm")}
    out = tmp_path / "out"
    result, _ = interrupt_at_first_output(["copy", "--input", str(tmp_path / "in"), "--output", str(out),
                                           "--operation-id", "stop", *dask(dask_cluster)], out)
    stderr = result.stderr
    assert result.returncode == 130, stderr
    assert "interrupted" in stderr and "The Dask cluster starts no more of this run's tasks" in stderr
    assert "Traceback" not in stderr
    before, deadline = None, time.monotonic() + 120
    while time.monotonic() < deadline and (now := digests(out)) != before:  # until the running tasks are done
        before = now
        time.sleep(3)
    assert before and set(before.values()) <= sources  # each output whole, byte for byte a source
    summary = json.loads((out / ".dicom-transfer" / "stop" / "summary.json").read_text())
    assert summary["status"] == "canceled" and summary["partial"] is True


def _count_marks(element: int, folder: str) -> tuple[int, int]:
    return element, len(os.listdir(folder))


def _mark(pair: tuple[int, int], folder: str) -> tuple[int, int]:
    Path(folder, f"{pair[0]}.{pair[1]}").touch()
    return pair


def _mark_total(element: int, total: int, folder: str) -> None:
    Path(folder, f"{element}-of-{total}").touch()


def test_chained_pardos_stream_element_by_element_and_side_inputs_of_a_stage_wait_for_it(dask_cluster, tmp_path):
    """A ParDo's output goes into the ParDo that reads it one element at a time, in the same task:
    when the first step sees element n, the second has already handled elements 0..n-1 (with each
    step's partition output held as a list, it would have seen none). A ParDo whose side input is
    computed from the step it reads (here a total) runs after that step, not within it."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from dicom_transfer.pipelines.dask_runner import DaskRunner

    marks, totals = tmp_path / "marks", tmp_path / "totals"
    marks.mkdir()
    totals.mkdir()
    options = PipelineOptions(["--runner", "DaskRunner", "--dask_client_address", dask_cluster])
    with beam.Pipeline(runner=DaskRunner(), options=options) as pipeline:
        numbers = pipeline | beam.Create(["one"]) | beam.FlatMap(lambda _: range(100))  # one partition
        _ = numbers | beam.Map(_count_marks, str(marks)) | beam.Map(_mark, str(marks))
        total = numbers | beam.CombineGlobally(sum)
        _ = numbers | "Total" >> beam.Map(_mark_total, beam.pvalue.AsSingleton(total), str(totals))
    assert sorted(tuple(map(int, path.name.split("."))) for path in marks.iterdir()) == [(n, n) for n in range(100)]
    assert sorted(path.name for path in totals.iterdir()) == sorted(f"{n}-of-4950" for n in range(100))
