"""Shared helpers: run the CLI as a user would, and read what it reports."""

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

from dicom_transfer.pipelines.cli import main
from dicom_transfer.sample import instance_bytes, uid_for

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "dicom_transfer.pipelines.cli"]


class Run:
    """The outcome of one CLI run: exit status, printed text, and the reports it wrote."""

    def __init__(self, status: int, out: str, report_dir: Path | None, err: str = "") -> None:
        self.status = status
        self.out = out
        self.err = err
        self.report_dir = report_dir

    @property
    def summary(self) -> dict:
        return json.loads((self.report_dir / "summary.json").read_text())

    @property
    def errors(self) -> list[dict]:
        text = (self.report_dir / "errors.log").read_text()
        return [json.loads(line) for line in text.splitlines()]

    @property
    def counter(self) -> dict:
        return self.summary["counter"]

    def error_for(self, name: str) -> dict:
        matches = [e for e in self.errors if e["Identifier"].endswith(name)]
        assert len(matches) == 1, f"expected one error record for {name}, got {matches}"
        return matches[0]


@pytest.fixture
def copy_cli(tmp_path, capsys):
    """Run ``dicom-transfer copy`` in-process with a fixed operation id; return a Run."""
    counter = {"n": 0}

    def run(*args: str, operation_id: str | None = None) -> Run:
        counter["n"] += 1
        op = operation_id or f"op{counter['n']}"
        argv = ["copy", *args, "--operation-id", op]
        status = main(argv)
        captured = capsys.readouterr()
        output = args[args.index("--output") + 1] if "--output" in args else None
        report_dir = None
        if output:
            layout = args[args.index("--layout") + 1] if "--layout" in args else "uid"
            report_dir = Path(output) / op if layout == "azure" else Path(output) / ".dicom-transfer" / op
        return Run(status, captured.out, report_dir, captured.err)

    return run


def run_cli_subprocess(*args: str, honour_permissions: bool = False, env: dict | None = None,
                       timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the CLI in a new process.

    ``honour_permissions``: when running as root, drop the capabilities that let root
    read any file, so that file modes apply as for any user.
    """
    prefix = []
    if honour_permissions and os.geteuid() == 0:
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    environment = {**os.environ, "FSSPEC_GCS_TOKEN": "anon", **(env or {})}
    return subprocess.run([*prefix, *CLI, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=environment)


def interrupt_at_first_output(args: list[str], out: Path,
                              stop: int = signal.SIGINT) -> tuple[subprocess.CompletedProcess, int]:
    """Run the CLI with ``args`` in a process group of its own, and send ``stop`` to the whole
    group (as a terminal's Ctrl-C, or systemd's stop, does) once a first ``.dcm`` is under
    ``out``; return what it printed and its status, and the process group's id."""
    process = subprocess.Popen([*CLI, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and not list(out.rglob("*.dcm")):
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be interrupted"
    os.killpg(process.pid, stop)
    stdout, stderr = process.communicate(timeout=60)
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr), process.pid


def change_behind_same_size_and_time(path: Path) -> None:
    """Other bytes in the file at ``path``, with its size and modification time as they were:
    what a quick check (size and mtime) cannot see."""
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def run_cli_in_process(capsys, *args: str) -> subprocess.CompletedProcess:
    """Run the CLI in this process, as ``run_cli_subprocess`` does in a new one (same result type):
    for checks that refuse a command line (exit 2) before any pipeline starts, ~0.1 s instead of the
    seconds a new Python with Beam costs."""
    capsys.readouterr()
    try:
        status = main(list(args))
    except SystemExit as exc:  # argparse's own refusals
        status = exc.code if isinstance(exc.code, int) else 2
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), status, captured.out, captured.err)


def sha256(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file below ``root``, reports excluded."""
    return {
        str(p.relative_to(root)): sha256(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".dicom-transfer" not in p.parts
    }


def write_instance(path: Path, name: str, **kwargs) -> tuple[Path, bytes, tuple[str, str, str]]:
    """Write a valid instance whose UIDs derive from ``name``; return path, bytes and UIDs."""
    uids = (kwargs.pop("study", uid_for(name, "st")), kwargs.pop("series", uid_for(name, "se")),
            kwargs.pop("sop", uid_for(name, "sop")))
    data = instance_bytes(*uids, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path, data, uids


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory):
    """One Orthanc (with DICOMweb) for the session; tests use their own study UIDs."""
    from servers import Orthanc

    server = Orthanc(tmp_path_factory.mktemp("orthanc")).start()
    yield server
    server.stop()


def server_cli(command: str, tmp_path: Path, capsys):
    """Run ``dicom-transfer COMMAND`` in-process; reports go to tmp_path/reports/<operation id>."""
    counter = {"n": 0}

    def run(*args: str) -> Run:
        counter["n"] += 1
        op = f"{command[:3]}{counter['n']}"
        reports = tmp_path / "reports" / op
        status = main([command, *args, "--operation-id", op, "--errors", str(reports / "errors.log"),
                       "--summary", str(reports / "summary.json")])
        captured = capsys.readouterr()
        return Run(status, captured.out, reports, captured.err)

    return run


@pytest.fixture
def import_cli(tmp_path, capsys):
    """Run ``dicom-transfer import`` in-process; reports go to tmp_path/reports."""
    return server_cli("import", tmp_path, capsys)


@pytest.fixture
def migrate_cli(tmp_path, capsys):
    """Run ``dicom-transfer migrate`` in-process; reports go to tmp_path/reports."""
    return server_cli("migrate", tmp_path, capsys)


@pytest.fixture(scope="session")
def stores(tmp_path_factory):
    """fake-gcs-server, Azurite and moto's S3 server, configured for fsspec through the
    environment (as a user would), plus one empty bucket or container per test."""
    import fsspec
    from servers import Azurite, FakeGcs, MotoS3

    base = tmp_path_factory.mktemp("stores")
    servers = []
    try:  # one that cannot start stops those already started (else they outlive the run)
        for server in (FakeGcs(base / "gcs"), MotoS3(base / "s3"),
                       Azurite(base / "azurite", str(REPO / ".tools/node_modules/.bin/azurite-blob"))):
            servers.append(server.start())
    except BaseException:
        for server in servers:
            server.stop()
        raise
    saved = dict(os.environ)
    for server in servers:
        os.environ.update(server.env)
    fsspec.config.conf.setdefault("gcs", {})["token"] = "anon"  # what FSSPEC_GCS_TOKEN=anon does at import
    fsspec.config.conf.setdefault("gs", {})["token"] = "anon"
    yield {type(s).__name__: s for s in servers}
    for server in servers:
        server.stop()
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def bucket(stores, request):
    """``make(scheme)`` creates a fresh bucket/container and returns its URL, e.g. ``gs://t-3f2a``."""
    import uuid

    import fsspec

    def make(scheme: str) -> str:
        name = f"t{uuid.uuid4().hex[:12]}"
        fsspec.filesystem(scheme.rstrip(":/")).mkdir(name)
        return f"{scheme}{name}"

    return make


# -- test tiers ------------------------------------------------------------------------------------
# `pytest -m "not servers and not subprocess"` is the fast tier for the inner loop: unit tests and
# in-process pipelines. The README's test command runs everything.
# Each fixture here starts a real server (pytest lists the fixtures a test uses transitively).
SERVER_FIXTURES = {"orthanc", "orthancs", "stores", "bucket", "loaded", "server", "servers",
                   "source", "destination",  # test_migrate_cli's two Orthanc servers
                   "destination_server", "pacs", "pacs_server", "echo_scp",  # Orthanc, dcmqrscp, an SCP
                   "dask_cluster"}  # a dask.distributed scheduler and 2 worker processes


def local_pipeline():
    """A TestPipeline on the engine local runs use (:func:`~dicom_transfer.pipelines.run.local_runner`,
    Beam's FnApiRunner). Beam's default DirectRunner first tries Prism, a runner it downloads from
    GitHub: offline that costs each pipeline the failed attempt; online the test would run on an
    engine the product never uses."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.test_pipeline import TestPipeline

    from dicom_transfer.pipelines.run import local_runner

    options = PipelineOptions([])
    return TestPipeline(runner=local_runner(options), options=options)


@pytest.fixture(autouse=True)
def _logging_restored():
    """A CLI run in-process configures logging for a terminal (its own handlers, no propagation,
    root handlers replaced); put it back after each test, so that no test sees another's set-up."""
    import logging

    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in list(logging.root.manager.loggerDict))]
    saved = [(lg, list(lg.handlers), lg.level, lg.propagate, lg.disabled) for lg in loggers
             if isinstance(lg, logging.Logger)]
    yield
    for logger, handlers, level, propagate, disabled in saved:
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate
        logger.disabled = disabled


@pytest.fixture(autouse=True, scope="session")
def _beam_temp_folders_removed():
    """Beam makes a ``beam-pipeline-temp*`` folder when a Pipeline is built and removes it only in
    ``run()``: the tests that build a graph without running it would leave one each in the temp
    folder. Those this test process made are removed at its end (only empty ones)."""
    import contextlib
    import glob
    import tempfile

    pattern = os.path.join(tempfile.gettempdir(), "beam-pipeline-temp*")
    before = set(glob.glob(pattern))
    yield
    for folder in set(glob.glob(pattern)) - before:
        with contextlib.suppress(OSError):  # not empty, or gone already
            os.rmdir(folder)


def pytest_configure(config):
    config.addinivalue_line("markers", "servers: starts Orthanc, an object-store emulator or another real server")
    config.addinivalue_line("markers", "subprocess: runs the CLI (or a build) in new processes")


def pytest_collection_modifyitems(config, items):
    import inspect

    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.servers)
        function = getattr(item, "function", None)
        try:
            source = inspect.getsource(function) if function else ""
        except (OSError, TypeError):
            source = ""
        if any(word in source for word in ("run_cli_subprocess", "interrupt_at_first_output", "subprocess.", "pty.fork",
                                          "--direct_running_mode")):
            item.add_marker(pytest.mark.subprocess)
