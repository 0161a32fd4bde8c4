"""The ``dicom-transfer`` command line.

Exit status: 0 = no failures; 1 = completed with failure records;
2 = invalid invocation or the run could not complete.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from dicom_transfer import __version__
from dicom_transfer.errors import redact
from dicom_transfer.io.files import open_url
from dicom_transfer.pipelines.configs import (
    UsageError,
    check_stores,
    copy_config,
    export_config,
    import_config,
    is_local_runner,
    product_options,
    unknown_options,
)
from dicom_transfer.pipelines.copy import build_copy_pipeline
from dicom_transfer.pipelines.export_pipeline import build_export_pipeline
from dicom_transfer.pipelines.import_pipeline import build_import_pipeline
from dicom_transfer.pipelines.options import COPY_OPTIONS, EXPORT_OPTIONS, IMPORT_OPTIONS
from dicom_transfer.report import COMPLETED, FAILED, build_summary, human_summary, read_json, write_text

LOG = logging.getLogger("dicom_transfer")
EXIT_OK, EXIT_FAILURES, EXIT_INVALID = 0, 1, 2
BEAM_OPTIONS_EPILOG = (
    "Any Apache Beam pipeline option is accepted too, e.g. --runner DataflowRunner, "
    "--direct_running_mode multi_processing --direct_num_workers 2."
)


def _quiet_local_workers(argv: list[str]) -> list[str]:
    """Keep Beam's own INFO lines out of local worker processes (progress lines stay)."""
    runner = PipelineOptions(argv).view_as(StandardOptions).runner
    if not is_local_runner(argparse.Namespace(runner=runner)) or any(
            a.startswith("--sdk_harness_log_level_overrides") for a in argv):
        return argv
    return [*argv, "--sdk_harness_log_level_overrides", json.dumps({"apache_beam": "WARNING"})]


def execute(operation_type: str, options: PipelineOptions, config, build, description: str) -> int:
    """Build and run a pipeline, then print the summary; return the exit status."""
    LOG.info("%s %s: %s", operation_type, config.reports.operation_id, description)
    try:
        pipeline = beam.Pipeline(options=options)
        build(pipeline, config)
        result = pipeline.run()
        if product_options(options).detach:
            job = getattr(result, "job_id", lambda: None)()
            print(f"{operation_type} {config.reports.operation_id}: submitted{f' as job {job}' if job else ''}; "
                  f"the summary will be written to {redact(config.reports.summary_url)}")
            return EXIT_OK
        result.wait_until_finish()
        summary = read_json(config.reports.summary_url)
    except Exception as exc:  # the run itself broke: say why, record it, exit 2
        message = redact(f"{type(exc).__name__}: {exc}")
        LOG.error("%s %s failed: %s", operation_type, config.reports.operation_id, message)
        _write_failed_summary(config, operation_type, message)
        return EXIT_INVALID
    print(human_summary(summary, config.reports.summary_url, config.reports.dry_run))
    _print_first_errors(config.reports.errors_url, summary["counter"].get("failure", 0))
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
    reports = config.reports
    summary = build_summary(
        operation_id=reports.operation_id, operation_type=operation_type,
        created_time=reports.created_time, counter={}, error_href=reports.errors_url,
        status=FAILED, extra={"error": message},
    )
    try:
        write_text(reports.summary_url, json.dumps(summary, indent=2) + "\n")
    except Exception as exc:  # noqa: BLE001 - best effort, the run already failed
        LOG.error("cannot write the summary %s either: %s", reports.summary_url, redact(str(exc)))


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
    logging.getLogger("azure.identity").setLevel(logging.ERROR)  # its failures reach the user as ours
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
