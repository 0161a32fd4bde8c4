"""The ``dicom-transfer`` command line.

Exit status: 0 = no failures; 1 = completed with failure records;
2 = invalid invocation or the run could not complete.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
from urllib.parse import urlsplit

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from dicom_transfer import __version__
from dicom_transfer.errors import redact, redact_url, utc_now_iso
from dicom_transfer.io.auth import AuthConfig, AuthError
from dicom_transfer.io.dicomweb import DicomwebClient, DicomwebError
from dicom_transfer.io.files import open_url
from dicom_transfer.io.objectstore import StoreUnavailable, check_bucket
from dicom_transfer.io.retry import RetryPolicy
from dicom_transfer.layout import Layout
from dicom_transfer.pipelines.copy import CopyConfig, build_copy_pipeline
from dicom_transfer.pipelines.export_pipeline import ExportConfig, build_export_pipeline
from dicom_transfer.pipelines.import_pipeline import ImportConfig, build_import_pipeline
from dicom_transfer.pipelines.options import COPY_OPTIONS, EXPORT_OPTIONS, IMPORT_OPTIONS
from dicom_transfer.report import (
    COMPLETED,
    FAILED,
    build_summary,
    default_report_dir,
    human_summary,
    new_operation_id,
    read_json,
    write_text,
)
from dicom_transfer.transforms.route import load_filter_file
from dicom_transfer.wildcards import parse_pattern

LOG = logging.getLogger("dicom_transfer")
EXIT_OK, EXIT_FAILURES, EXIT_INVALID = 0, 1, 2
IMPORT_REPORTS = "dicom-transfer-reports"  # import has no destination folder: reports go here
BEAM_OPTIONS_EPILOG = (
    "Any Apache Beam pipeline option is accepted too, e.g. --runner DataflowRunner, "
    "--direct_running_mode multi_processing --direct_num_workers 2."
)


class UsageError(Exception):
    """The invocation is invalid: reported before the pipeline starts, exit status 2."""


def _read_lines(url: str) -> list[str]:
    with open_url(url) as raw:
        return [line.decode("utf-8").strip() for line in raw]


def collect_patterns(inputs: list[str] | None, input_list: str | None) -> list[str]:
    """Patterns from ``--input`` and ``--input-list``, each checked; raises UsageError."""
    patterns = list(inputs or [])
    if input_list:
        try:
            lines = _read_lines(input_list)
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read --input-list {input_list}: {exc}") from exc
        patterns += [line for line in lines if line and not line.startswith("#")]
    if not patterns:
        raise UsageError("no input: give --input PATTERN or --input-list FILE")
    for pattern in patterns:
        try:
            parse_pattern(pattern)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
    return list(dict.fromkeys(patterns))


def check_stores(patterns: list[str], destination: str | None) -> None:
    """The buckets the run needs exist and answer (exit 2 otherwise)."""
    try:
        for pattern in patterns:
            check_bucket(pattern, "source")
        if destination:
            check_bucket(destination, "destination")
    except StoreUnavailable as exc:
        raise UsageError(str(exc)) from exc


def check_filter_file(url: str | None) -> None:
    if not url:
        return
    try:
        load_filter_file(url)
    except ValueError as exc:
        raise UsageError(f"--filter-file: {exc}") from exc
    except OSError as exc:
        raise UsageError(f"cannot read --filter-file {url}: {exc}") from exc


def unknown_options(argv: list[str]) -> list[str]:
    """Flags that neither this product nor Beam knows (typos would otherwise be ignored)."""
    options = PipelineOptions(argv)
    known = set(options.get_all_options(drop_default=False))
    everything = options.get_all_options(drop_default=False, retain_unknown_options=True)
    return sorted(f"--{name}" for name in set(everything) - known)


@dataclasses.dataclass(frozen=True)
class RunReports:
    """Identity and report locations of one run."""

    operation_type: str
    operation_id: str
    created_time: str
    errors_url: str
    summary_url: str
    dry_run: bool = False


def run_reports(operation_type: str, options, report_base: str, layout_name: str = "uid",
                dry_run: bool = False) -> RunReports:
    """Operation id and report locations (``report_base`` as for ``default_report_dir``)."""
    operation_id = options.operation_id or new_operation_id()
    report_dir = default_report_dir(report_base, layout_name, operation_id)
    return RunReports(operation_type, operation_id, utc_now_iso(),
                      options.errors or f"{report_dir}/errors.log",
                      options.summary or f"{report_dir}/summary.json", dry_run)


def copy_config(options: argparse.Namespace) -> CopyConfig:
    """Check the copy options and build the run's configuration; raises UsageError."""
    if not options.output:
        raise UsageError("--output DEST is required")
    patterns = collect_patterns(options.input, options.input_list)
    check_filter_file(options.filter_file)
    reports = run_reports("copy", options, options.output,
                          "azure" if options.layout == "azure" else "uid", options.transfer_dry_run)
    try:
        layout = Layout.parse(options.layout, reports.operation_id)
    except ValueError as exc:
        raise UsageError(f"--layout: {exc}") from exc
    return CopyConfig(
        patterns=tuple(patterns),
        destination=options.output.rstrip("/") or options.output,
        layout=layout,
        operation_id=reports.operation_id,
        created_time=reports.created_time,
        errors_url=reports.errors_url,
        summary_url=reports.summary_url,
        filter_file=options.filter_file,
        overwrite=options.overwrite,
        dry_run=options.transfer_dry_run,
        io_threads=options.io_threads,
    )


def dicomweb_client(options) -> DicomwebClient:
    """A checked client for ``--dicomweb-url``: exit 2 if the server cannot be used."""
    if not options.dicomweb_url:
        raise UsageError("--dicomweb-url URL is required")
    if urlsplit(options.dicomweb_url).scheme not in ("http", "https"):
        raise UsageError(f"--dicomweb-url must be an http(s) URL, not {redact(options.dicomweb_url)!r}")
    auth = AuthConfig(method=options.auth, token_env=options.token_env,
                      token_command=options.token_command, token_lifetime=options.token_lifetime,
                      username=options.username, password_env=options.password_env)
    try:
        client = DicomwebClient(options.dicomweb_url, auth, options.ca_bundle,
                                timeout=options.request_timeout,
                                retry=RetryPolicy(attempts=max(1, options.max_attempts)),
                                pool_size=max(4, options.concurrency * 2))
        client.check()
    except (AuthError, DicomwebError) as exc:
        raise UsageError(f"cannot use {redact_url(options.dicomweb_url)}: {exc}") from exc
    return client


def is_local_runner(options: argparse.Namespace) -> bool:
    return options.runner in (None, "DirectRunner", "direct", "SwitchingDirectRunner")


def import_config(options: argparse.Namespace) -> ImportConfig:
    if not is_local_runner(options) and not (options.errors and options.summary):
        raise UsageError("on a distributed runner, give --errors and --summary (e.g. gs:// paths): "
                         "import has no destination folder to put them in")
    patterns = collect_patterns(options.input, options.input_list)
    check_filter_file(options.filter_file)
    client = dicomweb_client(options)
    reports = run_reports("import", options, IMPORT_REPORTS, layout_name="azure")
    return ImportConfig(
        patterns=tuple(patterns), client=client, operation_id=reports.operation_id,
        created_time=reports.created_time, errors_url=reports.errors_url,
        summary_url=reports.summary_url, filter_file=options.filter_file,
        max_instances=max(1, options.max_instances_per_request),
        max_bytes=max(1, options.max_request_bytes), concurrency=max(1, options.concurrency),
        check_existing=options.check_existing)


def product_options(options: PipelineOptions) -> argparse.Namespace:
    """Every option's value (product and Beam) as one namespace."""
    return argparse.Namespace(**options.get_all_options(drop_default=False))


def export_config(options: argparse.Namespace) -> ExportConfig:
    if not options.output:
        raise UsageError("--output DEST is required")
    chosen = [bool(options.identifier), bool(options.identifiers_file), bool(options.filter_file),
              options.export_all]
    if sum(chosen) != 1:
        raise UsageError("give exactly one of --identifier (repeatable), --identifiers-file, "
                         "--filter-file or --all")
    for url in (options.identifiers_file, options.filter_file):
        if url:
            try:
                open_url(url).close()
            except OSError as exc:
                raise UsageError(f"cannot read {url}: {exc}") from exc
    client = dicomweb_client(options)
    reports = run_reports("export", options, options.output,
                          "azure" if options.layout == "azure" else "uid", options.transfer_dry_run)
    try:
        layout = Layout.parse(options.layout, reports.operation_id)
    except ValueError as exc:
        raise UsageError(f"--layout: {exc}") from exc
    return ExportConfig(
        client=client, destination=options.output.rstrip("/") or options.output, layout=layout,
        operation_id=reports.operation_id, created_time=reports.created_time,
        errors_url=reports.errors_url, summary_url=reports.summary_url,
        identifiers=tuple(options.identifier or ()), identifiers_file=options.identifiers_file,
        filter_file=options.filter_file, all_studies=options.export_all,
        transfer_syntax=options.transfer_syntax, overwrite=options.overwrite,
        dry_run=options.transfer_dry_run)


def _quiet_local_workers(argv: list[str]) -> list[str]:
    """Keep Beam's own INFO lines out of local worker processes (progress lines stay)."""
    runner = PipelineOptions(argv).view_as(StandardOptions).runner
    if not is_local_runner(argparse.Namespace(runner=runner)) or any(
            a.startswith("--sdk_harness_log_level_overrides") for a in argv):
        return argv
    return [*argv, "--sdk_harness_log_level_overrides", json.dumps({"apache_beam": "WARNING"})]


def execute(operation_type: str, options: PipelineOptions, config, build, description: str) -> int:
    """Build and run a pipeline, then print the summary; return the exit status."""
    LOG.info("%s %s: %s", operation_type, config.operation_id, description)
    try:
        pipeline = beam.Pipeline(options=options)
        build(pipeline, config)
        result = pipeline.run()
        if product_options(options).detach:
            job = getattr(result, "job_id", lambda: None)()
            print(f"{operation_type} {config.operation_id}: submitted{f' as job {job}' if job else ''}; "
                  f"the summary will be written to {redact(config.summary_url)}")
            return EXIT_OK
        result.wait_until_finish()
        summary = read_json(config.summary_url)
    except Exception as exc:  # the run itself broke: say why, record it, exit 2
        message = redact(f"{type(exc).__name__}: {exc}")
        LOG.error("%s %s failed: %s", operation_type, config.operation_id, message)
        _write_failed_summary(config, operation_type, message)
        return EXIT_INVALID
    print(human_summary(summary, config.summary_url, getattr(config, "dry_run", False)))
    _print_first_errors(config.errors_url, summary["counter"].get("failure", 0))
    return EXIT_OK if summary["status"] == COMPLETED else EXIT_FAILURES


def run_copy(argv: list[str]) -> int:
    """Run ``copy`` with ``argv`` (product and Beam options); return the exit status."""
    options = PipelineOptions(_quiet_local_workers(argv))
    config = copy_config(product_options(options))
    check_stores(config.patterns, config.destination)
    return execute("copy", options, config, build_copy_pipeline,
                   f"{len(config.patterns)} pattern(s) -> {redact(config.destination)} "
                   f"(layout {config.layout.name})")


def run_import(argv: list[str]) -> int:
    """Run ``import`` with ``argv``; return the exit status."""
    options = PipelineOptions(_quiet_local_workers(argv))
    config = import_config(product_options(options))
    check_stores(config.patterns, None)
    return execute("import", options, config, build_import_pipeline,
                   f"{len(config.patterns)} pattern(s) -> {config.client.safe_url}")


def run_export(argv: list[str]) -> int:
    """Run ``export`` with ``argv``; return the exit status."""
    options = PipelineOptions(_quiet_local_workers(argv))
    config = export_config(product_options(options))
    check_stores([], config.destination)
    return execute("export", options, config, build_export_pipeline,
                   f"{config.client.safe_url} -> {redact(config.destination)} (layout {config.layout.name})")


def _print_first_errors(errors_url: str, failures: int, limit: int = 10) -> None:
    if not failures:
        return
    print(f"  first {min(limit, failures)} of {failures} errors:")
    try:
        with open_url(errors_url) as lines:
            for _, line in zip(range(limit), lines, strict=False):
                record = json.loads(line)
                print(f"    {record['Identifier']}: {record['Error']}")
    except (OSError, ValueError) as exc:
        print(f"    (cannot read {redact(errors_url)}: {exc})")


def _write_failed_summary(config, operation_type: str, message: str) -> None:
    summary = build_summary(
        operation_id=config.operation_id, operation_type=operation_type,
        created_time=config.created_time, counter={}, error_href=config.errors_url,
        status=FAILED, extra={"error": message},
    )
    try:
        write_text(config.summary_url, json.dumps(summary, indent=2) + "\n")
    except Exception as exc:  # noqa: BLE001 - best effort, the run already failed
        LOG.error("cannot write the summary %s either: %s", config.summary_url, redact(str(exc)))


def run_demo(args: argparse.Namespace, beam_argv: list[str]) -> int:
    """Generate a sample set with a few bad files and copy it (the README's first command)."""
    from dicom_transfer.sample import write_sample_set

    workdir = args.dir or tempfile.mkdtemp(prefix="dicom-transfer-demo-")
    sample = write_sample_set(f"{workdir}/input", studies=3, series_per_study=2,
                              instances_per_series=4)
    print(f"Generated {len(sample.valid)} valid instances and {len(sample.bad)} bad files "
          f"in {workdir}/input")
    status = run_copy(["--input", f"{workdir}/input/**", "--output", f"{workdir}/output",
                       *beam_argv])
    if status == EXIT_INVALID:
        return status
    print(f"\nThe failures above are the {len(sample.bad)} deliberately bad sample files "
          f"({', '.join(sorted(set(sample.bad.values())))}).\nOutput: {workdir}/output")
    return EXIT_OK


COMMANDS = (
    ("copy", "copy files matched by wildcards to a per-UID layout",
     "Copy DICOM files matched by wildcards, validating each, to a layout built from their UIDs.",
     COPY_OPTIONS),
    ("import", "store files matched by wildcards on a DICOMweb server (STOW-RS)",
     "Validate DICOM files matched by wildcards and store them on a DICOMweb server with batched "
     "STOW-RS requests.", IMPORT_OPTIONS),
    ("export", "export instances from a DICOMweb server to a per-UID layout",
     "Export studies, series or instances (by identifiers, a filter file, or the whole store) from a "
     "DICOMweb server with QIDO-RS and WADO-RS, validate them, and write them to a layout.",
     EXPORT_OPTIONS),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicom-transfer",
        description="Move DICOM instances in bulk between storage and DICOMweb, with Apache Beam.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, summary, description, option_classes in COMMANDS:
        command = commands.add_parser(name, help=summary, description=description, epilog=BEAM_OPTIONS_EPILOG)
        for options_class in option_classes:
            options_class._add_argparse_args(command)
    demo = commands.add_parser(
        "demo", help="generate sample data (with bad files) and copy it locally",
        epilog=BEAM_OPTIONS_EPILOG)
    demo.add_argument("--dir", default=None, help="Working folder (default: a new temporary one).")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    for noisy in ("apache_beam", "azure", "botocore", "aiobotocore", "s3fs", "gcsfs", "fsspec", "urllib3",
                  "google"):  # their INFO lines are per request; ours are per run and progress
        logging.getLogger(noisy).setLevel(logging.WARNING)
    parser = build_parser()
    args, beam_argv = parser.parse_known_args(argv)
    command_argv = argv[1:] if argv and argv[0] == args.command else argv
    try:
        unknown = unknown_options(beam_argv)
        if unknown:
            raise UsageError(f"unknown option(s): {', '.join(unknown)}")
        if args.command == "copy":
            return run_copy(command_argv)
        if args.command == "import":
            return run_import(command_argv)
        if args.command == "export":
            return run_export(command_argv)
        return run_demo(args, beam_argv)
    except UsageError as exc:
        print(f"dicom-transfer {args.command}: error: {redact(str(exc))}", file=sys.stderr)
        return EXIT_INVALID


if __name__ == "__main__":
    sys.exit(main())
