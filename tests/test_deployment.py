"""Running at scale, verified offline: graph shape, packaging, Flex Templates, schedules."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from conftest import REPO, tree

from dicom_transfer.pipelines.cli import parse_command
from dicom_transfer.pipelines.configs import copy_config
from dicom_transfer.pipelines.copy import build_copy_pipeline
from dicom_transfer.pipelines.flex_template import launch, template_argv
from dicom_transfer.pipelines.options import build_parser, command_parser
from dicom_transfer.sample import write_sample_set

TEMPLATES = REPO / "templates"
PIPELINES = ("copy", "import", "export", "migrate")


def metadata(name: str) -> dict:
    return json.loads((TEMPLATES / name / "metadata.json").read_text())


def command_flags(name: str) -> set[str]:
    """Every option string the CLI accepts for a command."""
    sub = command_parser(build_parser(), name)
    return {s for action in sub._actions for s in action.option_strings}


# CLI options that are deliberately not Flex Template parameters, and why.
_SECRET = ("names an environment variable, which a template launch cannot set; a secret is never a template "
           "parameter (it would show in the job's parameters): use auth=google or deid_key_file")
NOT_TEMPLATE_PARAMETERS = {
    "detach": "the launcher always submits the job detached",
    "dry_run": "--dry_run is Dataflow's own option (the job is built, not run): a dry run is a command-line run",
    "verbose": "the launcher has no terminal: Dataflow's job page shows progress and worker logs",
    "quiet": "the launcher has no terminal",
    "progress": "the launcher has no terminal",
    "progress_interval": "the launcher has no terminal",
    "log_file": "a file on the launcher's VM, which is gone once the job is submitted",
    "processes": "worker processes of a local run: Dataflow scales with its own workers (refused off the DirectRunner)",
    "token_env": _SECRET, "source_token_env": _SECRET, "password_env": _SECRET, "source_password_env": _SECRET,
    "deid_key_env": _SECRET,
    "username": "HTTP basic needs its password from an environment variable (password_env)",
    "source_username": "HTTP basic needs its password from an environment variable (source_password_env)",
    "token_command": "a command to run on the launcher and workers is not taken from a template form",
    "source_token_command": "a command to run on the launcher and workers is not taken from a template form",
    "token_lifetime": "only with token_command", "source_token_lifetime": "only with source_token_command",
}


def template_names(name: str) -> set[str]:
    """The template parameter name of every option of a command (``--max-associations``:
    ``max_associations``), one per option (its first long spelling)."""
    sub = command_parser(build_parser(), name)
    names = set()
    for action in sub._actions:
        spellings = [s for s in action.option_strings if s.startswith("--") and s not in ("--help", "--version")]
        if spellings:
            names.add(spellings[0][2:].replace("-", "_"))
    return names


def copy_job(argv: list[str]) -> tuple[beam.Pipeline, PipelineOptions]:
    """The copy pipeline a command line builds, and its Beam options. ``--checksum``: no earlier
    manifest is looked for in the destination while the run is built, which would ask GCS (the
    graph of a first run is the same)."""
    args, beam_argv = parse_command(["copy", "--checksum", *argv])
    options = PipelineOptions(beam_argv)
    pipeline = beam.Pipeline(options=options)
    build_copy_pipeline(pipeline, copy_config(args))
    return pipeline, options


GBK = "beam:transform:group_by_key:v1"


def transforms_of(pipeline: beam.Pipeline) -> dict[str, object]:
    proto = pipeline.to_runner_api()
    return {t.unique_name: t for t in proto.components.transforms.values()}


def upstream_of(transforms: dict, name: str) -> set[str]:
    """Names of every leaf transform that feeds ``name``, directly or not."""
    producers = {pc: n for n, t in transforms.items() if not t.subtransforms for pc in t.outputs.values()}
    seen, todo = set(), list(transforms[name].inputs.values())
    while todo:
        producer = producers.get(todo.pop())
        if producer and producer not in seen:
            seen.add(producer)
            todo.extend(transforms[producer].inputs.values())
    return seen


@pytest.mark.parametrize(("output", "validation", "writing"), [
    ("/out", "CopyFiles/Copy/ParDo(_CopyFn)", "CopyFiles/Copy/ParDo(_CopyFn)"),
    ("gs://bucket/out", "ReadAndValidate/Validate/ParDo(_ValidateFn)", "WriteInstances/Write/ParDo(_WriteFn)"),
])
def test_copy_graph_has_a_fusion_break_between_expansion_and_validation(output, validation, writing):
    pipeline, _ = copy_job(["--input", "/in/**.dcm", "--output", output])
    transforms = transforms_of(pipeline)
    assert transforms["ExpandPatterns/DeduplicateAndReshuffle"].spec.urn == GBK
    feeding_validation = upstream_of(transforms, validation)
    assert "ExpandPatterns/DeduplicateAndReshuffle" in feeding_validation
    assert "ExpandPatterns/List/ParDo(_ExpandPatternFn)" in feeding_validation
    shuffles = {name for name in upstream_of(transforms, writing) if transforms[name].spec.urn == GBK}
    if output == "/out":  # to local disk, each file is written in the step that validates it
        assert validation == writing and shuffles == {"ExpandPatterns/DeduplicateAndReshuffle"}
    else:  # to an object store, grouped by output directory (one listing each)
        assert "WriteInstances/GroupByDirectory" in shuffles


def test_local_copy_graph_is_slim():
    """Every ParDo costs per element and, on Beam's side, at start-up: the local copy keeps few."""
    pipeline, _ = copy_job(["--input", "/in/**.dcm", "--output", "/out"])
    pardos = [t for t in transforms_of(pipeline).values() if t.spec.urn == "beam:transform:pardo:v1"]
    # 10 for the copy and its summary, 16 for the manifest, the reconciliation and report.html
    # (whose first step also counts the outcomes for the summary)
    assert len(pardos) <= 26, sorted(t.unique_name for t in pardos)
    assert len([t for t in pardos if "/Audit/" in t.unique_name]) <= 16


@pytest.mark.parametrize("in_one_process", [False, True])
def test_import_graph_groups_by_sop_uid_only_for_workers_elsewhere(tmp_path, in_one_process):
    """In this process the first request leaves while the files are still read; with workers
    elsewhere the grouping by SOP Instance UID is what decides duplicates across them."""
    from dicom_transfer.io.dicomweb import DicomwebClient
    from dicom_transfer.pipelines.import_pipeline import ImportConfig, build_import_pipeline
    from dicom_transfer.report import RunReports

    pipeline = beam.Pipeline()
    build_import_pipeline(pipeline, ImportConfig(
        patterns=(f"{tmp_path}/**",), client=DicomwebClient("http://127.0.0.1:9/dicom-web"),
        reports=RunReports("import", "x", "t", "e", "s"), in_one_process=in_one_process))
    transforms = transforms_of(pipeline)
    shuffles = {name for name in upstream_of(transforms, "StoreInstances/StowRs/ParDo(_StoreFn)")
                if transforms[name].spec.urn == GBK}
    if in_one_process:
        assert shuffles == set()
    else:
        assert {"ExpandPatterns/DeduplicateAndReshuffle",
                "StoreInstances/UniqueBySopUid/ResolveDuplicates/GroupByTarget"} <= shuffles


def test_export_graph_breaks_fusion_per_series(tmp_path):
    from dicom_transfer.io.dicomweb import DicomwebClient
    from dicom_transfer.layout import Layout
    from dicom_transfer.pipelines.export_pipeline import ExportConfig, build_export_pipeline
    from dicom_transfer.report import RunReports

    pipeline = beam.Pipeline()
    build_export_pipeline(pipeline, ExportConfig(
        client=DicomwebClient("http://127.0.0.1:9/dicom-web"), destination=str(tmp_path),
        layout=Layout.parse("uid"), reports=RunReports("export", "x", "t", "e", "s"), all_studies=True))
    transforms = transforms_of(pipeline)
    assert transforms["ExpandToInstances/GroupBySeries"].spec.urn == GBK
    assert "ExpandToInstances/GroupBySeries" in upstream_of(transforms, "RetrieveAndWrite/WadoRs/ParDo(_RetrieveFn)")


def test_migrate_graph_breaks_fusion_per_series():
    from dicom_transfer.io.dicomweb import DicomwebClient
    from dicom_transfer.pipelines.migrate import MigrateConfig, build_migrate_pipeline
    from dicom_transfer.report import RunReports

    pipeline = beam.Pipeline()
    build_migrate_pipeline(pipeline, MigrateConfig(
        source=DicomwebClient("http://127.0.0.1:9/dicom-web"), destination=DicomwebClient("http://127.0.0.1:8/dw"),
        reports=RunReports("migrate", "x", "t", "e", "s"), all_studies=True))
    transforms = transforms_of(pipeline)
    assert transforms["ExpandToInstances/GroupBySeries"].spec.urn == GBK
    assert "ExpandToInstances/GroupBySeries" in upstream_of(
        transforms, "MigrateSeries/RetrieveStoreVerify/ParDo(_MigrateSeriesFn)")


def test_template_booleans_of_migrate_become_flags():
    assert template_argv(["--verify_bytes=true", "--all=true"], "migrate") == ["--verify-bytes", "--all"]


def test_dataflow_runner_builds_the_job_offline(tmp_path):
    """Options validate and the Dataflow job is built, with the endpoint unreachable; nothing is submitted."""
    pytest.importorskip("apache_beam.runners.dataflow.internal.apiclient")
    pipeline, options = copy_job([
        "--runner", "DataflowRunner", "--project", "demo-project", "--region", "us-central1",
        "--temp_location", "gs://demo-bucket/tmp", "--dataflow_endpoint", "https://dataflow.invalid",
        "--dry_run", "True", "--setup_file", str(REPO / "setup.py"),
        "--number_of_worker_harness_threads", "16",
        "--input", "gs://demo-bucket/in/**.dcm", "--output", "gs://demo-bucket/out"])
    result = pipeline.run()
    names = {t.unique_name for t in result.job.proto_pipeline.components.transforms.values()}
    assert {"ExpandPatterns", "ReadAndValidate", "RouteToLayout", "WriteInstances", "WriteReports"} <= names
    assert result.job.proto.type == 1  # JOB_TYPE_BATCH


def test_setup_py_builds_an_sdist_and_wheel_with_every_package_and_the_entry_point(tmp_path):
    subprocess.run([sys.executable, "-m", "build", "--sdist", "--wheel", "--no-isolation",
                    "--outdir", str(tmp_path), str(REPO)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("dicom_transfer-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    for package in ("dicom_transfer", "dicom_transfer/io", "dicom_transfer/transforms", "dicom_transfer/pipelines"):
        assert f"{package}/__init__.py" in names
    assert "dicom-transfer = dicom_transfer.pipelines.cli:command_line" in entry_points
    assert "dicom_transfer/py.typed" in names and any(n.endswith("licenses/LICENSE") or n.endswith("/LICENSE")
                                                      for n in names)
    with tarfile.open(next(tmp_path.glob("*.tar.gz"))) as archive:
        members = archive.getnames()
    assert any(m.endswith("dicom_transfer/transforms/validate.py") for m in members)
    assert any(m.endswith("/setup.py") for m in members)


@pytest.mark.parametrize("name", PIPELINES)
def test_template_metadata_matches_the_cli_options(name):
    meta = metadata(name)
    assert meta["name"] and meta["description"] and meta["sdkInfo"]["language"] == "PYTHON"
    flags = command_flags(name)
    for parameter in meta["parameters"]:
        assert {"name", "label", "helpText", "isOptional"} <= set(parameter), parameter
        assert f"--{parameter['name']}" in flags, f"{parameter['name']} is not an option of {name}"
        for regex in parameter.get("regexes", []):
            re.compile(regex)
    declared = {p["name"] for p in meta["parameters"]}
    missing = {option for option in template_names(name) - declared if option not in NOT_TEMPLATE_PARAMETERS}
    assert not missing, f"options of {name} without a template parameter: {sorted(missing)}"
    required = {"copy": {"input", "input_list", "output"},
                "import": {"input", "input_list", "dicomweb_url", "errors", "summary"},
                "export": {"dicomweb_url", "output", "identifier", "identifiers_file", "filter_file", "all"},
                "migrate": {"source_dicomweb_url", "dicomweb_url", "identifier", "identifiers_file", "filter_file",
                            "all", "errors", "summary", "source_auth", "auth", "verify_bytes"}}
    assert required[name] <= declared
    # A PACS can stand in for the DICOMweb server: the URL is then not needed
    alternatives = {"import": ["dicomweb_url"], "export": ["dicomweb_url"],
                    "migrate": ["dicomweb_url", "source_dicomweb_url"]}
    for parameter in meta["parameters"]:
        if parameter["name"] in alternatives.get(name, ()):
            assert parameter["isOptional"], parameter["name"]


def test_one_dockerfile_serves_every_template_and_its_workers():
    """One image: Beam's SDK image of the pinned version, with the Flex Template launcher copied in."""
    dockerfile = (TEMPLATES / "Dockerfile").read_text()
    beam_pin = re.search(r"^apache-beam==(\S+)$", (REPO / "constraints.txt").read_text(), re.M).group(1)
    assert re.search(rf"^ARG BEAM_VERSION={re.escape(beam_pin)}$", dockerfile, re.M), "BEAM_VERSION != constraints.txt"
    assert re.search(r"^FROM apache/beam_python\$\{PYTHON_VERSION\}_sdk:\$\{BEAM_VERSION\}$", dockerfile, re.M)
    assert re.search(r"^FROM gcr\.io/dataflow-templates-base/python3\d+-template-launcher-base AS template_launcher",
                     dockerfile, re.M)
    assert "COPY --from=template_launcher /opt/google/dataflow/python_template_launcher" in dockerfile
    assert '-c constraints.txt ".[dataflow,google]"' in dockerfile
    assert "ENV FLEX_TEMPLATE_PYTHON_PY_FILE=${WORKDIR}/launcher.py" in dockerfile
    assert "ENV DICOM_TRANSFER_PIPELINE=${PIPELINE}" in dockerfile
    assert 'ENTRYPOINT ["/opt/apache/beam/boot"]' in dockerfile
    assert (TEMPLATES / "launcher.py").exists()
    # The Python of the launcher base and of the SDK image agree.
    launcher_python = re.search(r"python3(\d+)-template-launcher-base", dockerfile).group(1)
    sdk_python = re.search(r"^ARG PYTHON_VERSION=3\.(\d+)$", dockerfile, re.M).group(1)
    assert launcher_python == sdk_python
    # No per-pipeline copies left to drift apart.
    assert not list(TEMPLATES.glob("*/Dockerfile")) and not list(TEMPLATES.glob("*/launcher.py"))


def test_template_booleans_become_flags():
    assert template_argv(["--overwrite=true", "--all=false", "--output=/o"], "export") == ["--overwrite", "--output=/o"]
    assert template_argv(["--no_check_existing=TRUE"], "import") == ["--no-check-existing"]


@pytest.mark.parametrize("name", PIPELINES)
def test_every_true_false_parameter_of_a_template_becomes_a_flag_the_cli_takes(name):
    """A template passes ``--allow_burned_in=true``; the CLI's on/off options take no value."""
    flags = command_flags(name)
    booleans = [p["name"] for p in metadata(name)["parameters"] if p.get("regexes") == ["^(true|false)$"]]
    assert booleans, name
    for parameter in booleans:
        (flag,) = template_argv([f"--{parameter}=true"], name)
        assert flag in flags and "=" not in flag, (parameter, flag)
        assert template_argv([f"--{parameter}=false"], name) == []


def launcher(pipeline: str, args: list[str], image: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "DICOM_TRANSFER_PIPELINE": pipeline, "DICOM_TRANSFER_IMAGE": image}
    return subprocess.run([sys.executable, str(TEMPLATES / "launcher.py"), *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300, env=env)


def test_copy_launcher_runs_the_pipeline_with_template_parameters(tmp_path):
    """Parameters given the Flex Template way (--name=value), on the DirectRunner."""
    sample = write_sample_set(str(tmp_path / "in"), studies=2, series_per_study=1, instances_per_series=3)
    out = tmp_path / "out"
    result = launcher("copy", [f"--input={tmp_path}/in/**", f"--output={out}", "--layout=azure", "--operation_id=tmpl",
                               "--overwrite=false", f"--summary={tmp_path}/summary.json"])
    assert result.returncode == 0, result.stderr
    assert "submitted" in result.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["counter"]["success"] == len(sample.valid) == 6
    assert len(tree(out / "tmpl" / "results")) == 6


def test_launcher_without_a_pipeline_says_how_to_build_the_image():
    result = launcher("", ["--input=/nowhere/**", "--output=/tmp/x"])
    assert result.returncode != 0
    assert "DICOM_TRANSFER_PIPELINE is not set" in result.stderr


@pytest.mark.parametrize(("given", "expected"), [
    ([], "--sdk_container_image=registry/dt:1"),
    (["--sdk_container_image=other/img:2"], "--sdk_container_image=other/img:2"),
])
def test_workers_run_the_template_image_unless_told_otherwise(monkeypatch, given, expected):
    seen = []
    monkeypatch.setattr("dicom_transfer.pipelines.cli.main", lambda argv: seen.append(argv) or 0)
    assert launch("copy", ["--input=/a/**", "--output=/b", *given], image="registry/dt:1") == 0
    images = [a for a in seen[0] if a.startswith("--sdk_container_image")]
    assert images == [expected]
    assert seen[0][0] == "copy" and "--detach" in seen[0]


def scheduled_parameters() -> list[tuple[str, dict]]:
    found = []
    body = json.loads((TEMPLATES / "scheduling" / "cloud-scheduler-copy.json").read_text())
    found.append(("copy", body["launchParameter"]["parameters"]))
    tree_ = ast.parse((TEMPLATES / "scheduling" / "airflow_dag.py").read_text())
    for node in ast.walk(tree_):
        if isinstance(node, ast.Dict):
            keys = [k.value for k in node.keys if isinstance(k, ast.Constant)]
            if "containerSpecGcsPath" in keys:
                spec = ast.literal_eval(node.values[keys.index("containerSpecGcsPath")]) \
                    if isinstance(node.values[keys.index("containerSpecGcsPath")], ast.Constant) else None
                path = ast.unparse(node.values[keys.index("containerSpecGcsPath")])
                name = re.search(r"/(\w+)\.json", spec or path).group(1)
                parameters = ast.literal_eval(node.values[keys.index("parameters")])
                found.append((name, parameters))
    return found


def test_scheduled_runs_use_only_template_parameters():
    found = scheduled_parameters()
    assert {name for name, _ in found} == {"copy", "export"}
    for name, parameters in found:
        declared = {p["name"] for p in metadata(name)["parameters"]}
        assert set(parameters) <= declared, set(parameters) - declared
        required = {p["name"] for p in metadata(name)["parameters"] if not p["isOptional"]}
        assert required <= set(parameters), required - set(parameters)


def test_the_readme_dataflow_recipe_installs_the_backends_it_uses():
    """`pip install '.[dataflow,google]'` then a gs:// copy: those extras must pull gcsfs."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    readme = (REPO / "README.md").read_text()
    recipe = re.search(r"pip install '\.\[([\w,-]+)\]'\ndicom-transfer copy --input '(\w+)://", readme)
    extras, scheme = recipe.group(1).split(","), recipe.group(2)
    from dicom_transfer.io.preflight import BACKENDS

    module = BACKENDS[scheme][0]
    pulled = [requirement for extra in extras for requirement in project["optional-dependencies"][extra]]
    assert any(requirement.startswith(module) for requirement in pulled), (extras, pulled)
