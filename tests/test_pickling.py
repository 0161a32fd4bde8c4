"""Every DoFn of every pipeline survives the trip a distributed runner gives it.

Dataflow, the Dask runner and ``multi_processing`` pickle each DoFn with Beam's pickler and unpickle it
on a worker. A DoFn that holds a lock, a socket, a session or a connection pool fails there and only
there, which a DirectRunner test in-process never shows. So: build each pipeline from a command line
as the CLI does (without running it), take every ParDo's DoFn from the graph, and round-trip it;
the copy must pickle again (a worker may hand it on), and no secret the launcher holds in its
environment may be inside the bytes (they would be stored with the job). The DICOMweb configs check
their server while the command line is read, hence a real Orthanc.
"""

from __future__ import annotations

import argparse
import base64
import bz2

import apache_beam as beam
import pytest
from apache_beam.internal import pickler
from apache_beam.options.pipeline_options import PipelineOptions

from dicom_transfer.pipelines.cli import parse_command

SECRETS = {"DICOMWEB_TOKEN": "tok-3c1d9a-never-pickled", "DICOMWEB_PASSWORD": "pw-77e2b1-never-pickled",
           "SOURCE_DICOMWEB_TOKEN": "src-tok-5f0a-never-pickled"}
DEID_KEY = "k" * 48


def _copy(args: argparse.Namespace):
    from dicom_transfer.pipelines.configs import copy_config
    from dicom_transfer.pipelines.copy import build_copy_pipeline

    return build_copy_pipeline, copy_config(args)


def _copy_in_process(args: argparse.Namespace):
    """As the in-process DirectRunner runs it: the listing without its grouping, worker processes."""
    import dataclasses

    build, config = _copy(args)
    return build, dataclasses.replace(config, in_one_process=True, processes=2)


def _import(args: argparse.Namespace):
    from dicom_transfer.pipelines.configs import import_config
    from dicom_transfer.pipelines.import_pipeline import build_import_pipeline

    return build_import_pipeline, import_config(args, True)


def _import_in_process(args: argparse.Namespace):
    """As the in-process DirectRunner runs it: no grouping by SOP Instance UID before sending."""
    from dicom_transfer.pipelines.configs import import_config
    from dicom_transfer.pipelines.import_pipeline import build_import_pipeline

    return build_import_pipeline, import_config(args, True, in_process=True)


def _export(args: argparse.Namespace):
    from dicom_transfer.pipelines.configs import export_config
    from dicom_transfer.pipelines.export_pipeline import build_export_pipeline

    return build_export_pipeline, export_config(args)


def _migrate(args: argparse.Namespace):
    from dicom_transfer.pipelines.configs import migrate_config
    from dicom_transfer.pipelines.migrate import build_migrate_pipeline

    return build_migrate_pipeline, migrate_config(args, True)


def _dimse_export(args: argparse.Namespace):
    from dicom_transfer.pipelines.dimse import build_dimse_export_pipeline, dimse_export_config

    return build_dimse_export_pipeline, dimse_export_config(args)


def _dimse_import(args: argparse.Namespace):
    from dicom_transfer.pipelines.dimse import build_dimse_import_pipeline, dimse_import_config

    return build_dimse_import_pipeline, dimse_import_config(args, True)


def _dimse_migrate(args: argparse.Namespace):
    from dicom_transfer.pipelines.dimse_migrate import build_dimse_migrate_pipeline, dimse_migrate_config

    return build_dimse_migrate_pipeline, dimse_migrate_config(args, True)


# name -> (builder, command line); {d} is a scratch folder. Each command line is one a user could run.
COMMANDS = {
    "copy": (_copy, ["copy", "--input", "{d}/in/**", "--output", "{d}/out"]),
    "copy-in-process": (_copy_in_process, ["copy", "--input", "{d}/in/**", "--input", "{d}/in/a/*.dcm",
                                           "--output", "{d}/out"]),
    "copy-deidentify": (_copy, ["copy", "--input", "{d}/in/**", "--output", "{d}/out", "--deidentify", "basic",
                                "--deid-key-env", "DEID_KEY_FOR_TEST", "--deid-mapping", "{d}/map.csv"]),
    "import": (_import, ["import", "--input", "{d}/in/**", "--dicomweb-url", "{url}",
                         "--auth", "bearer", "--errors", "{d}/errors.log", "--summary", "{d}/summary.json"]),
    "import-in-process": (_import_in_process, ["import", "--input", "{d}/in/**", "--input", "{d}/in/a/*.dcm",
                                               "--dicomweb-url", "{url}", "--auth", "bearer"]),
    "export": (_export, ["export", "--dicomweb-url", "{url}", "--auth", "basic",
                         "--username", "reader", "--all", "--output", "{d}/out"]),
    "export-deidentify": (_export, ["export", "--dicomweb-url", "{url}", "--all",
                                    "--output", "{d}/out", "--deidentify", "basic",
                                    "--deid-key-env", "DEID_KEY_FOR_TEST"]),
    "migrate": (_migrate, ["migrate", "--source-dicomweb-url", "{url}", "--source-auth",
                           "bearer", "--dicomweb-url", "{url_by_name}", "--auth", "bearer", "--all",
                           "--errors", "{d}/errors.log", "--summary", "{d}/summary.json"]),
    "migrate-deidentify": (_migrate, ["migrate", "--source-dicomweb-url", "{url}", "--dicomweb-url", "{url_by_name}",
                                      "--all", "--errors", "{d}/errors.log", "--summary", "{d}/summary.json",
                                      "--deidentify", "basic", "--deid-key-env", "DEID_KEY_FOR_TEST",
                                      "--deid-mapping", "{d}/map.csv"]),
    "export-dimse-deidentify": (_dimse_export, ["export", "--dimse-source", "dimse://PACS@127.0.0.1:{dimse_port}",
                                                "--all", "--output", "{d}/out", "--deidentify", "basic",
                                                "--deid-key-env", "DEID_KEY_FOR_TEST"]),
    "export-dimse": (_dimse_export, ["export", "--dimse-source", "dimse://PACS@127.0.0.1:{dimse_port}", "--all",
                                     "--study-date", "20240101-20240131", "--output", "{d}/out"]),
    "migrate-dimse": (_dimse_migrate, ["migrate", "--dimse-source", "dimse://PACS@127.0.0.1:{dimse_port}", "--all",
                                       "--study-date", "20240101-20240131", "--dicomweb-url", "{url}",
                                       "--move-destination", "RECEIVER", "--move-staging", "{d}/staging",
                                       "--errors", "{d}/errors.log", "--summary", "{d}/summary.json"]),
    "migrate-dimse-deidentify": (_dimse_migrate, ["migrate", "--dimse-source", "dimse://PACS@127.0.0.1:{dimse_port}",
                                                  "--identifier", "1.2.3", "--dicomweb-url", "{url}",
                                                  "--errors", "{d}/errors.log", "--summary", "{d}/summary.json",
                                                  "--deidentify", "basic", "--deid-key-env", "DEID_KEY_FOR_TEST",
                                                  "--deid-mapping", "{d}/map.csv"]),
    "migrate-to-pacs": (_migrate, ["migrate", "--source-dicomweb-url", "{url}", "--source-auth", "bearer",
                                   "--dimse-destination", "dimse://PACS@127.0.0.1:{dimse_port}", "--all",
                                   "--errors", "{d}/errors.log", "--summary", "{d}/summary.json"]),
    "migrate-dimse-to-pacs": (_dimse_migrate, ["migrate", "--dimse-source", "dimse://PACS@127.0.0.1:{dimse_port}",
                                               "--dimse-destination", "dimse://OTHER@localhost:{dimse_port}",
                                               "--identifier", "1.2.3", "--errors", "{d}/errors.log",
                                               "--summary", "{d}/summary.json"]),
    "import-dimse": (_dimse_import, ["import", "--input", "{d}/in/**", "--dimse-destination",
                                     "dimse://PACS@127.0.0.1:{dimse_port}", "--errors", "{d}/errors.log",
                                     "--summary", "{d}/summary.json"]),
}


def _fill(argument: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        argument = argument.replace(name, value)
    return argument


def dofns_of(name: str, folder: str, url: str, port: int) -> list[beam.DoFn]:
    """The DoFns of the pipeline a command line builds (the graph only; nothing runs)."""
    builder, argv = COMMANDS[name]
    values = {"{d}": folder, "{url}": url, "{url_by_name}": url.replace("127.0.0.1", "localhost"),
              "{dimse_port}": str(port)}
    args, beam_argv = parse_command([_fill(a, values) for a in argv])
    build, config = builder(args)
    pipeline = beam.Pipeline(options=PipelineOptions(beam_argv))
    build(pipeline, config)
    found: list[beam.DoFn] = []

    class Visitor(beam.pipeline.PipelineVisitor):
        def visit_transform(self, node) -> None:
            if isinstance(node.transform, beam.ParDo):
                found.append(node.transform.fn)

        enter_composite_transform = visit_transform

    pipeline.visit(Visitor())
    return found


@pytest.fixture(scope="module")
def echo_scp():
    """A DIMSE peer that answers C-ECHO (the DIMSE configs echo their peer while the command line is read)."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification
    from servers import free_port

    ae = AE(ae_title="PACS")
    ae.add_supported_context(Verification)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False)
    yield port
    server.shutdown()


@pytest.fixture
def environment(monkeypatch, tmp_path, orthanc, echo_scp):
    """A scratch folder, secrets in the environment, and the peers the configs check."""
    for variable, value in SECRETS.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("DEID_KEY_FOR_TEST", DEID_KEY)
    (tmp_path / "in").mkdir()
    return str(tmp_path), orthanc.dicomweb, echo_scp


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_dofn_pickles_like_on_a_worker(environment, name):
    dofns = dofns_of(name, *environment)
    assert len(dofns) >= 3, f"{name}: expected the pipeline's DoFns, got {dofns}"
    for dofn in dofns:
        label = f"{name}: {type(dofn).__qualname__}"
        data = pickler.dumps(dofn)
        raw = bz2.decompress(base64.b64decode(data))  # what Beam stores with the job, uncompressed
        for secret in (*SECRETS.values(), DEID_KEY):
            assert secret.encode() not in raw, f"{label} carries a secret from the environment"
        restored = pickler.loads(data)
        assert type(restored) is type(dofn), label
        assert set(vars(restored)) >= {k for k in vars(dofn) if not k.startswith("_")}, label
        pickler.loads(pickler.dumps(restored))  # handed on again by the worker
