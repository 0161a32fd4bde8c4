"""Turn command-line options into checked run configurations (exit status 2 on a bad one)."""

from __future__ import annotations

import argparse
import sys
from urllib.parse import urlsplit

from dicom_transfer.errors import redact, redact_url, utc_now_iso
from dicom_transfer.io.auth import AuthConfig, AuthError
from dicom_transfer.io.dicomweb import DicomwebClient, DicomwebError
from dicom_transfer.io.files import open_url
from dicom_transfer.io.objectstore import StoreUnavailable, check_bucket
from dicom_transfer.io.retry import RetryPolicy
from dicom_transfer.layout import Layout
from dicom_transfer.pipelines.copy import CopyConfig
from dicom_transfer.pipelines.export_pipeline import ExportConfig
from dicom_transfer.pipelines.import_pipeline import ImportConfig
from dicom_transfer.pipelines.options import UsageError
from dicom_transfer.report import RunReports, default_report_dir, new_operation_id
from dicom_transfer.transforms.route import load_filter_file
from dicom_transfer.wildcards import parse_pattern

IMPORT_REPORTS = "dicom-transfer-reports"  # import has no destination folder: reports go here


__all__ = ["UsageError", "check_stores", "copy_config", "export_config", "import_config"]


def _read_lines(url: str) -> list[str]:
    if url == "-":  # standard input, as gsutil -I
        return [line.strip() for line in sys.stdin]
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


def check_stores(patterns, destination: str | None, reports: RunReports | None = None) -> None:
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


def run_reports(operation_type: str, options, report_base: str, layout_name: str = "uid",
                dry_run: bool = False) -> RunReports:
    """Operation id and report locations (``report_base`` as for ``default_report_dir``)."""
    operation_id = options.operation_id or new_operation_id()
    report_dir = default_report_dir(report_base, layout_name, operation_id)
    to_stdout = options.summary == "-"
    return RunReports(operation_type, operation_id, utc_now_iso(),
                      options.errors or f"{report_dir}/errors.log",
                      f"{report_dir}/summary.json" if to_stdout or not options.summary else options.summary,
                      dry_run, summary_to_stdout=to_stdout)


def output_layout(operation_type: str, options: argparse.Namespace) -> tuple[RunReports, Layout]:
    """Reports beside the output (in the operation's folder for the azure layout) and the layout."""
    reports = run_reports(operation_type, options, options.output,
                          "azure" if options.layout == "azure" else "uid", options.dry_run)
    try:
        return reports, Layout.parse(options.layout, reports.operation_id)
    except ValueError as exc:
        raise UsageError(f"--layout: {exc}") from exc


def copy_config(options: argparse.Namespace) -> CopyConfig:
    """Check the copy options and build the run's configuration; raises UsageError."""
    patterns = collect_patterns(options.input, options.input_list)
    check_filter_file(options.filter_file)
    reports, layout = output_layout("copy", options)
    return CopyConfig(
        patterns=tuple(patterns),
        destination=options.output.rstrip("/") or options.output,
        layout=layout,
        reports=reports,
        filter_file=options.filter_file,
        overwrite=options.overwrite,
        io_threads=options.io_threads or 0,
        strict=options.strict,
    )


def dicomweb_client(options) -> DicomwebClient:
    """A checked client for ``--dicomweb-url``: exit 2 if the server cannot be used."""
    if urlsplit(options.dicomweb_url).scheme not in ("http", "https"):
        raise UsageError(f"--dicomweb-url must be an http(s) URL, not {redact(options.dicomweb_url)!r}")
    auth = AuthConfig(method=options.auth, token_env=options.token_env,
                      token_command=options.token_command, token_lifetime=options.token_lifetime,
                      username=options.username, password_env=options.password_env)
    try:
        client = DicomwebClient(options.dicomweb_url, auth, options.ca_bundle,
                                timeout=options.request_timeout,
                                retry=RetryPolicy(attempts=options.max_attempts),
                                pool_size=max(4, options.concurrency * 2))
        client.check()
    except (AuthError, DicomwebError) as exc:
        raise UsageError(f"cannot use {redact_url(options.dicomweb_url)}: {exc}") from exc
    return client


def import_config(options: argparse.Namespace, local: bool = True) -> ImportConfig:
    """Check the import options and build the run's configuration; raises UsageError.

    ``local``: the runner runs here (a distributed one needs explicit report locations).
    """
    if not local and not (options.errors and options.summary and options.summary != "-"):
        raise UsageError("on a distributed runner, give --errors and --summary (e.g. gs:// paths): "
                         "import has no destination folder to put them in")
    patterns = collect_patterns(options.input, options.input_list)
    check_filter_file(options.filter_file)
    client = dicomweb_client(options)
    reports = run_reports("import", options, IMPORT_REPORTS, layout_name="azure", dry_run=options.dry_run)
    return ImportConfig(
        patterns=tuple(patterns), client=client, reports=reports, filter_file=options.filter_file,
        max_instances=options.max_instances_per_request, max_bytes=options.max_request_bytes,
        concurrency=options.concurrency, check_existing=options.check_existing, strict=options.strict)


def export_config(options: argparse.Namespace) -> ExportConfig:
    for url in (options.identifiers_file, options.filter_file):
        if url:
            try:
                open_url(url).close()
            except OSError as exc:
                raise UsageError(f"cannot read {url}: {exc}") from exc
    client = dicomweb_client(options)
    reports, layout = output_layout("export", options)
    return ExportConfig(
        client=client, destination=options.output.rstrip("/") or options.output, layout=layout,
        reports=reports,
        identifiers=tuple(options.identifier or ()), identifiers_file=options.identifiers_file,
        filter_file=options.filter_file, all_studies=options.export_all,
        transfer_syntax=options.transfer_syntax, overwrite=options.overwrite)


