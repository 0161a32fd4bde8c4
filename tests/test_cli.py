"""The command line around the pipelines: strict options, checks before the run, logging, progress,
summaries on standard output, stdin lists, interruption. What a careful user would try."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import CLI, REPO, interrupt_at_first_output, run_cli_subprocess, tree

from dicom_transfer.pipelines.cli import main
from dicom_transfer.sample import write_sample_set


@pytest.fixture
def sample(tmp_path):
    return write_sample_set(str(tmp_path / "in"), studies=1, series_per_study=2, instances_per_series=3)


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize(("argv", "words"), [
    (["copy", "--input", "in", "--output", "o", "--dicomweb-url", "http://h/dw"],
     "copy does not take --dicomweb-url (an option of import, export, migrate, verify)"),
    (["copy", "--input", "in", "--output", "o", "--all"], "copy does not take --all (an option of export, migrate)"),
    (["copy", "--input", "in", "--output", "o", "--identifier", "1.2"], "copy does not take --identifier"),
    (["import", "--input", "in", "--dicomweb-url", "http://h/dw", "--layout", "azure"],
     "import does not take --layout"),
    (["import", "--input", "in", "--dicomweb-url", "http://h/dw", "--overwrite"], "import does not take --overwrite"),
    (["import", "--input", "in", "--dicomweb-url", "http://h/dw", "--output", "o"], "import does not take --output"),
    (["export", "--all", "--dicomweb-url", "http://h/dw", "--output", "o", "--io-threads", "4"],
     "export does not take --io-threads"),
    (["copy", "--input", "in", "--output", "o", "--outptu", "x"], "--outptu (did you mean --output?)"),
    (["copy", "--input", "/d/a.dcm", "/d/b.dcm", "/d/c.dcm", "--output", "o"],
     "unexpected argument(s) '/d/b.dcm', '/d/c.dcm'"),
])
def test_an_option_a_subcommand_does_not_take_is_refused_by_name(capsys, tmp_path, argv, words):
    status, out, err = run_main(capsys, *argv)
    assert status == 2
    assert words in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("option", "value", "words"), [
    ("--request-timeout", "0", "must be a positive number"),
    ("--concurrency", "0", "must be 1 or more"),
    ("--max-attempts", "0", "must be 1 or more"),
    ("--max-instances-per-request", "-3", "must be 1 or more"),
    ("--max-request-bytes", "lots", "is not a size"),
    ("--operation-id", "../outside", "not a valid operation id"),
])
def test_bad_numbers_sizes_and_ids_are_refused(capsys, option, value, words):
    status, _, err = run_main(capsys, "import", "--input", "in", "--dicomweb-url", "http://127.0.0.1:9/dw",
                              option, value)
    assert status == 2
    assert option in err and words in err


def test_sizes_take_the_units_the_help_uses():
    from dicom_transfer.pipelines.options import byte_size

    assert byte_size("32 MiB") == byte_size("32MiB") == 32 << 20
    assert byte_size("500KB") == 500_000 and byte_size("33554432") == 33554432


def test_bad_transfer_syntax_is_refused_before_any_request(capsys):
    status, _, err = run_main(capsys, "export", "--all", "--dicomweb-url", "http://127.0.0.1:9/dw",
                              "--output", "o", "--transfer-syntax", "bogus")
    assert status == 2 and "not '*' nor a transfer syntax UID" in err


def test_help_and_version_do_not_import_beam():
    code = ("import sys, contextlib, io\n"
            "from dicom_transfer.pipelines.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    assert main(['copy', '--help']) == 0 and main(['--version']) == 0\n"
            "assert 'examples:' in out.getvalue(), out.getvalue()\n"
            "print('apache_beam' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.stdout.strip() == "False", result.stderr


def test_unsupported_schemes_and_missing_backends_are_one_line(capsys, tmp_path):
    status, _, err = run_main(capsys, "copy", "--input", "ftp://host/x/**", "--output", str(tmp_path / "o"))
    assert status == 2 and "unsupported scheme ftp://" in err and len(err.strip().splitlines()) == 1
    status, _, err = run_main(capsys, "copy", "--input", str(tmp_path), "--output", "foo://b/o")
    assert status == 2 and "unsupported scheme foo://" in err
    # gcsfs missing, as in a default install: the fix is named, in a fraction of a second
    code = ("import sys, importlib.abc\n"
            "class Missing(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name.split('.')[0] == 'gcsfs': raise ModuleNotFoundError(name)\n"
            "sys.meta_path.insert(0, Missing())\n"
            "from dicom_transfer.pipelines.cli import main\n"
            f"sys.exit(main(['copy', '--input', 'gs://b/in/**', '--output', {str(tmp_path / 'o')!r}]))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "pip install 'dicom-transfer[gcs]'" in result.stderr and "Traceback" not in result.stderr


AZURITE_ACCOUNT = "devstoreaccount1"


@pytest.mark.parametrize(("connection_string", "words"), [
    ("", "AZURE_STORAGE_CONNECTION_STRING is blank or malformed"),
    ("garbage", "AZURE_STORAGE_CONNECTION_STRING is blank or malformed"),
    (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey=c2VjcmV0a2V5;"
     f"BlobEndpoint=127.0.0.1:9/{AZURITE_ACCOUNT};", "has no scheme: write BlobEndpoint=http://127.0.0.1:9"),
    (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey=not*base64!!x;"
     f"BlobEndpoint=http://127.0.0.1:9/{AZURITE_ACCOUNT};", "account key is not valid base64"),
])
def test_azure_credential_mistakes_are_one_line_without_the_secret(tmp_path, connection_string, words):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
    env["AZURE_STORAGE_CONNECTION_STRING"] = connection_string
    result = subprocess.run([*CLI, "copy", "--input", "az://container/in/**", "--output", str(tmp_path / "o")],
                            capture_output=True, text=True, cwd=REPO, timeout=120, env=env)
    assert result.returncode == 2, result.stderr
    assert words in result.stderr and "Traceback" not in result.stderr
    assert "c2VjcmV0a2V5" not in result.stderr and "not*base64" not in result.stderr


def test_a_destination_that_cannot_be_written_is_refused_before_the_run(capsys, sample, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    status, _, err = run_main(capsys, "copy", "--input", str(tmp_path / "in"), "--output", str(a_file))
    assert status == 2 and "is a file, not a folder" in err
    status, _, err = run_main(capsys, "copy", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "o"),
                              "--errors", str(tmp_path / "in"))
    assert status == 2 and "is a folder, not a file" in err
    read_only = tmp_path / "ro"
    read_only.mkdir(mode=0o555)
    result = run_cli_subprocess("copy", "--input", str(tmp_path / "in"), "--output", str(read_only / "o"),
                                honour_permissions=True)
    assert result.returncode == 2 and "is not writable" in result.stderr, result.stderr
    assert not list(read_only.iterdir())


def test_strict_makes_a_pattern_or_filter_line_that_matches_nothing_a_failure(copy_cli, sample, tmp_path):
    unknown = "/studies/1.2.3.999"
    wanted = f"/studies/{sample.valid[0].study_uid}"
    (tmp_path / "filter.txt").write_text(f"{wanted}\n{unknown}\n")
    args = ["--input", f"{tmp_path}/in/**", "--input", f"{tmp_path}/nothing/*.dcm", "--filter-file",
            str(tmp_path / "filter.txt"), "--output", str(tmp_path / "o")]
    lenient = copy_cli(*args)
    assert lenient.summary["unmatched"] == {"filterLines": [unknown], "patterns": [f"{tmp_path}/nothing/*.dcm"]}
    assert f"filter-file line '{unknown}' selected no instance" in lenient.out
    assert lenient.counter["failure"] == len(sample.bad)
    strict = copy_cli(*args, "--strict")
    assert strict.status == 1
    assert strict.counter["failure"] == len(sample.bad) + 2
    assert strict.error_for("nothing/*.dcm")["Error"] == "pattern matched no file"
    assert "selects no instance" in strict.error_for(unknown)["Error"]
    assert strict.summary["unmatched"] == {}


def test_summary_on_stdout_and_input_list_on_stdin(sample, tmp_path):
    result = subprocess.run([*CLI, "copy", "--input-list", "-", "--output", str(tmp_path / "o"), "--summary", "-"],
                            input=f"# the sample\n{tmp_path}/in/**\n", capture_output=True, text=True, cwd=REPO,
                            timeout=300)
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)  # nothing else on stdout: it can be piped into jq
    assert summary["counter"]["success"] == len(sample.valid) and summary["status"] == "completedWithErrors"
    assert summary["counter"]["filesMatched"] == len(sample.valid) + len(sample.bad)
    assert summary["destination"] == str(tmp_path / "o") and summary["durationSeconds"] > 0
    assert "instances written" in result.stderr


def test_a_summary_path_that_is_a_pipe_is_written_into_not_replaced(sample, tmp_path):
    fifo = tmp_path / "summary.fifo"
    os.mkfifo(fifo)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()), daemon=True)
    reader.start()
    result = run_cli_subprocess("copy", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "o"),
                                "--summary", str(fifo))
    reader.join(30)
    assert result.returncode == 1, result.stderr
    assert json.loads(received[0])["counter"]["success"] == len(sample.valid)
    assert fifo.is_fifo()


def test_an_output_inside_the_input_is_not_read_back(copy_cli, sample, tmp_path):
    source = tmp_path / "in"
    first = copy_cli("--input", f"{source}/**", "--output", str(source / "sorted"))
    again = copy_cli("--input", f"{source}/**", "--output", str(source / "sorted"))
    assert first.counter["success"] == len(sample.valid)
    assert (again.counter["success"], again.counter["unchanged"]) == (0, len(sample.valid))
    assert again.counter["failure"] == len(sample.bad)  # the reports of the first run were not inputs


def test_logging_survives_a_root_logger_configured_by_an_import(sample, tmp_path):
    """Beam without [gcp] logs a warning at import, which configures the root logger first."""
    code = ("import logging, sys\n"
            "logging.warning('apitools not found, and bigquery client libraries are not available')\n"
            "from dicom_transfer.pipelines.cli import main\n"
            f"sys.exit(main(['copy', '--input', {str(tmp_path / 'in')!r}, '--output', {str(tmp_path / 'o')!r},"
            " '--progress', 'lines', '--operation-id', 'logs']))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 1, result.stderr
    assert " INFO copy logs: 1 pattern(s)" in result.stderr
    assert " INFO progress: " in result.stderr


def test_json_logs_and_a_log_file(sample, tmp_path):
    log_file = tmp_path / "run.log"
    result = run_cli_subprocess("copy", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "o"),
                                "--log-format", "json", "--log-file", str(log_file), "--progress", "lines")
    assert result.returncode == 1, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert {"start", "progress"} <= {e.get("event") for e in events}
    last = [e for e in events if e.get("event") == "progress"][-1]["totals"]
    assert (last["success"], last["failure"]) == (len(sample.valid), len(sample.bad))
    assert log_file.read_text().count('"event": "start"') == 1


def test_one_aggregated_progress_line_across_worker_processes(tmp_path):
    made = write_sample_set(str(tmp_path / "in"), studies=2, series_per_study=3, instances_per_series=20,
                            bad_files=False)
    result = run_cli_subprocess("copy", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "o"),
                                "--progress", "lines", "--progress-interval", "0.5",
                                "--direct_running_mode", "multi_processing", "--direct_num_workers", "2")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if " progress: " in line]
    assert lines, result.stderr
    assert f"progress: {len(made.valid)}/{len(made.valid)} instances" in lines[-1]
    assert "read+validate:" not in result.stderr  # no per-worker lines when the launcher aggregates


WORKER_PROCESSES = ("--direct_running_mode", "multi_processing", "--direct_num_workers", "2")


@pytest.mark.parametrize(("mode", "stop"), [((), signal.SIGINT), (WORKER_PROCESSES, signal.SIGINT),
                                            (WORKER_PROCESSES, signal.SIGTERM)],
                         ids=["in-process", "multi_processing", "multi_processing-SIGTERM"])
def test_ctrl_c_stops_cleanly_and_says_what_was_done(tmp_path, mode, stop):
    write_sample_set(str(tmp_path / "in"), studies=4, series_per_study=5, instances_per_series=40,
                     pixel_bytes=64 * 1024, bad_files=False)
    out = tmp_path / "out"
    result, group = interrupt_at_first_output(["copy", "--input", str(tmp_path / "in"), "--output", str(out),
                                               "--operation-id", "stop", *mode], out, stop)
    assert result.returncode == 130, result.stderr
    assert "interrupted" in result.stderr and "Traceback" not in result.stderr
    assert "Exception in thread" not in result.stderr
    time.sleep(1)
    with contextlib.suppress(ProcessLookupError):  # no worker left behind
        os.killpg(group, 0)
        pytest.fail("a process of the interrupted run is still running")
    summary = json.loads((out / ".dicom-transfer" / "stop" / "summary.json").read_text())
    assert summary["status"] == "canceled" and summary["partial"] is True
    assert "errorHref" not in summary["results"]
    assert all(path.endswith(".dcm") for path in tree(out))  # nothing partial under a final name


def test_the_readme_library_example_runs_as_written(tmp_path, monkeypatch):
    readme = (REPO / "README.md").read_text()
    start = readme.index("```python\n", readme.index("## Using the transforms in your own pipeline"))
    code = readme[start + len("```python\n"):readme.index("```", start + 10)]
    made = write_sample_set(str(tmp_path / "incoming"), studies=1, series_per_study=1, instances_per_series=2)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    summary = json.loads((tmp_path / "reports" / "summary.json").read_text())
    assert summary["counter"]["success"] == len(made.valid)
    errors = (tmp_path / "reports" / "errors.log").read_text().splitlines()
    assert len(errors) == len(made.bad) == summary["counter"]["failure"]


def test_a_terminal_gets_one_progress_bar(tmp_path):
    """What a person sees in a terminal (a pseudo-terminal here): a bar, then the summary."""
    import pty

    made = write_sample_set(str(tmp_path / "in"), studies=2, series_per_study=2, instances_per_series=10,
                            bad_files=False)
    argv = [*CLI, "copy", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "o")]
    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI, attached to the pseudo-terminal
        os.chdir(REPO)
        os.execv(argv[0], argv)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert os.waitstatus_to_exitcode(status) == 0, screen
    assert "100%|" in screen and f"| {len(made.valid)}/{len(made.valid)} [" in screen  # tqdm: done of found
    assert f"{len(made.valid)} instances written" in screen
    assert " INFO progress:" not in screen  # a bar, not lines


def test_a_dead_emulator_is_reported_at_once_not_after_the_sdk_retries(tmp_path):
    from servers import free_port

    env = {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{free_port()}", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
    result = run_cli_subprocess("copy", "--input", "gs://bucket/in/**", "--output", str(tmp_path / "o"), env=env)
    assert result.returncode == 2
    assert "source bucket gs://bucket cannot be reached" in result.stderr
    assert "(from STORAGE_EMULATOR_HOST) does not accept connections" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_de_identification_is_refused_where_it_is_not_wired_rather_than_ignored(capsys, tmp_path, monkeypatch):
    """Never accept --deidentify and write identifiable data: C-MOVE places instances outside the
    pipeline; and migrate, like every pipeline, refuses to start without a key."""
    monkeypatch.setenv("DEID_KEY", "k3y-for-tests-only-5f0c1e2a9b7d4e6f")
    status, _, err = run_main(capsys, "export", "--dimse-source", "dimse://PACS@127.0.0.1:9", "--all",
                              "--output", str(tmp_path / "o"), "--deidentify", "basic", "--deid-key-env", "DEID_KEY",
                              "--move-destination", "RECEIVER", "--move-listen", "127.0.0.1:9")
    assert status == 2 and "retrieves by C-GET" in err
    status, _, err = run_main(capsys, "migrate", "--source-dicomweb-url", "http://127.0.0.1:9/a", "--dicomweb-url",
                              "http://127.0.0.1:9/b", "--all", "--deidentify", "basic")
    assert status == 2 and "de-identification needs a key" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("beam_argv", "needed"), [
    ([], False),
    (["--runner", "DirectRunner", "--direct_num_workers", "2"], False),
    (["--runner=DataflowRunner", "--project", "p"], True),
    (["--runner", "apache_beam.runners.dask.dask_runner.DaskRunner"], True),
    (["--temp_location", "gs://bucket/tmp"], True),
    (["--temp_location=/tmp/beam"], False),
])
def test_beam_filesystems_are_kept_where_beam_may_use_them(beam_argv, needed):
    from dicom_transfer.pipelines.cli import LOCAL_RUNNERS
    from dicom_transfer.pipelines.startup import needs_beam_filesystems

    assert needs_beam_filesystems(beam_argv, LOCAL_RUNNERS) is needed


def test_the_worker_processes_of_a_local_run_do_not_import_them_either(tmp_path):
    """Beam starts each multi_processing worker with its own entry point, which imports them all
    (~1.7 s per worker instead of ~0.75 s); a local run starts its workers without them."""
    code = ("import os, sys\n"
            "from dicom_transfer.pipelines.startup import CLOUD_FILESYSTEMS, UNUSED_SDKS, refuse_unused_modules\n"
            "refuse_unused_modules()\n"
            "import apache_beam as beam\n"
            "from apache_beam.options.pipeline_options import PipelineOptions\n"
            "from apache_beam.testing.util import assert_that, equal_to\n"
            "from dicom_transfer.pipelines.run import local_runner\n"
            "options = PipelineOptions(['--direct_running_mode', 'multi_processing', '--direct_num_workers', '2'])\n"
            "def loaded(_):\n"
            "    import sys, os\n"
            "    found = sorted(m for m in CLOUD_FILESYSTEMS + UNUSED_SDKS if m in sys.modules)\n"
            "    return os.getpid() != LAUNCHER, found\n"
            "LAUNCHER = os.getpid()\n"
            "with beam.Pipeline(runner=local_runner(options), options=options) as p:\n"
            "    assert_that(p | beam.Create([1, 2]) | beam.Map(loaded), equal_to([(True, [])] * 2))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "semi_persistent" not in result.stderr


def test_the_installed_command_ends_with_the_runs_status_and_everything_it_printed(tmp_path):
    """The ``dicom-transfer`` script ends the process as soon as the run is over (no interpreter
    tear-down, 0.4-0.5 s): its status, its whole summary on a pipe, and its log file are all there."""
    write_sample_set(str(tmp_path / "in"), studies=1, series_per_study=1, instances_per_series=2, bad_files=False)
    (tmp_path / "in" / "broken.dcm").write_bytes(b"not DICOM")
    script = Path(sys.executable).with_name("dicom-transfer")
    result = subprocess.run([str(script), "copy", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                             "--log-file", str(tmp_path / "run.log")],
                            capture_output=True, text=True, cwd=REPO, timeout=300,
                            env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"})  # a pipe buffers
    assert result.returncode == 1, result.stderr
    assert "2 instances written" in result.stdout and "1 failed" in result.stdout
    assert "  report: " in result.stdout
    assert result.stdout.rstrip().splitlines()[-1].endswith("too short for the 128-byte preamble and 'DICM'")
    assert len(tree(tmp_path / "out")) == 2
    assert "3/3 instances (1 failed)" in (tmp_path / "run.log").read_text()


def test_a_local_run_does_not_import_beams_cloud_filesystems(tmp_path):
    """They cost ~0.8 s of start-up with the cloud SDKs installed (and the Dataflow API client, BigQuery,
    Pub/Sub and MongoDB's SDKs ~0.4 s more, apitools and oauth2client ~0.2 s), for nothing on a local
    run. Nor does a copy of explicit-VR files with the UID layout import pydicom, de-identification,
    DIMSE (~0.45 s) or requests (~0.1 s)."""
    write_sample_set(str(tmp_path / "in"), studies=1, series_per_study=1, instances_per_series=2, bad_files=False)
    code = ("import sys\nfrom dicom_transfer.pipelines.cli import main\n"
            f"status = main(['copy', '--input', {str(tmp_path / 'in')!r}, '--output', {str(tmp_path / 'out')!r}])\n"
            "print(sorted(m for m in sys.modules if m.endswith(('gcsfilesystem', 's3filesystem', "
            "'blobstoragefilesystem')) or m.startswith(('pymongo', 'google.cloud.pubsub', "
            "'google.cloud.bigquery', 'google.cloud.dataflow', 'apitools', 'oauth2client'))))\n"
            "print(sorted(m for m in ('pydicom', 'pynetdicom', 'dicom_transfer.deid', 'requests')\n"
            "             if m in sys.modules))\n"
            "sys.exit(status)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    beams, ours = result.stdout.strip().splitlines()[-2:]
    assert beams == "[]"
    assert ours == "[]"  # nor pydicom (~0.3 s), de-identification, DIMSE or requests (~0.1 s): a local copy
    # uses none of them
    assert "Failed to import" not in result.stderr and "bson" not in result.stderr
    assert len(tree(tmp_path / "out")) == 2


@pytest.mark.parametrize("mode", [(), WORKER_PROCESSES], ids=["in-process", "multi_processing"])
def test_a_local_run_makes_no_network_connection(tmp_path, mode):
    """Beam's DirectRunner first tries to download its Prism runner from GitHub: behind a proxy
    that accepted the connection and never answered, a 1-file copy hung for ever, 0 written."""
    import socket

    write_sample_set(str(tmp_path / "in"), studies=1, series_per_study=1, instances_per_series=2, bad_files=False)
    proxy = socket.create_server(("127.0.0.1", 0))
    connections = []
    threading.Thread(target=lambda: connections.extend(iter(proxy.accept, None)), daemon=True).start()
    url = f"http://127.0.0.1:{proxy.getsockname()[1]}"
    env = {"HTTPS_PROXY": url, "HTTP_PROXY": url, "https_proxy": url, "http_proxy": url, "NO_PROXY": "",
           "no_proxy": "", "HOME": str(tmp_path / "home")}
    try:
        result = run_cli_subprocess("copy", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                                    *mode, env=env, timeout=120)
    finally:
        proxy.close()
    assert result.returncode == 0, result.stderr
    assert len(tree(tmp_path / "out")) == 2
    assert connections == []
    assert not (tmp_path / "home" / ".apache_beam").exists()  # no Prism download was attempted
    assert "Discarding unparseable" not in result.stderr and "semi_persistent" not in result.stderr


@pytest.mark.parametrize(("argv", "expected"), [
    ([], True),
    (["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"], False),
    (["--direct_running_mode", "multi_threading"], False),
    (["--direct_num_workers", "2"], False),
    (["--runner", "BundleBasedDirectRunner"], False),
    (["--runner", "DataflowRunner", "--project", "p", "--region", "r", "--temp_location", "gs://b/t"], False),
])
def test_only_a_runner_in_this_process_gets_the_listing_without_its_grouping(argv, expected):
    """With workers in other processes (or threads), each would de-duplicate only what it saw:
    the files found must go through the grouping that spreads them (ExpandPatterns' ``spread``)."""
    from dicom_transfer.pipelines.cli import pipeline_options
    from dicom_transfer.pipelines.configs import in_one_process

    assert in_one_process(*pipeline_options(argv)) is expected


def test_beam_options_views_are_made_once_and_share_the_options():
    import copy
    import pickle

    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    from dicom_transfer.pipelines.beam_options import BeamOptions

    options = BeamOptions(["--direct_num_workers", "3"])
    assert options.view_as(StandardOptions) is options.view_as(StandardOptions)
    options.view_as(StandardOptions).runner = "DirectRunner"  # through one view, seen through the others
    assert options.view_as(StandardOptions).runner == "DirectRunner" == options.get_all_options()["runner"]
    assert options.view_as(DirectOptions).direct_num_workers == 3
    for again in (pickle.loads(pickle.dumps(options)), copy.deepcopy(options)):
        assert "_views" not in vars(again)
        assert again.view_as(StandardOptions).runner == "DirectRunner"
        assert again.view_as(DirectOptions).direct_num_workers == 3


@pytest.mark.parametrize(("given", "in_process", "expected"), [
    ([], True, 8), ([], False, 4), (["--concurrency", "2"], True, 2), (["--concurrency", "16"], False, 16)])
def test_import_requests_in_flight_default_to_8_in_process_and_4_elsewhere(orthanc, tmp_path, given, in_process,
                                                                           expected):
    """A Dataflow worker has many threads, each with its own requests in flight; in one process,
    the store step alone sends. Export and migrate keep 4."""
    from dicom_transfer.pipelines.cli import parse_command
    from dicom_transfer.pipelines.configs import import_config

    args, _ = parse_command(["import", "--input", str(tmp_path), "--dicomweb-url", orthanc.dicomweb, *given])
    config = import_config(args, True, in_process)
    assert (config.concurrency, config.in_one_process) == (expected, in_process)
    export, _ = parse_command(["export", "--dicomweb-url", orthanc.dicomweb, "--all", "--output", str(tmp_path)])
    assert export.concurrency == 4
