"""Turn command-line options into checked run configurations (exit status 2 on a bad one)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import sys
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from dicom_transfer.errors import redact, redact_url, utc_now_iso
from dicom_transfer.io.files import read_list_file, scheme_of
from dicom_transfer.io.objectstore import check_bucket
from dicom_transfer.io.preflight import StoreUnavailable, check_scheme, check_writable_file, check_writable_folder
from dicom_transfer.layout import Layout
from dicom_transfer.pipelines.copy_config import CopyConfig
from dicom_transfer.pipelines.deid import deid_config
from dicom_transfer.pipelines.options import UsageError
from dicom_transfer.report import RunReports, default_report_dir, new_operation_id
from dicom_transfer.resources import parse_filter_line, parse_identifier
from dicom_transfer.wildcards import parse_pattern

if TYPE_CHECKING:  # their modules import Beam, pydicom or requests, which a copy to local disk does without
    from dicom_transfer.io.dicomweb import DicomwebClient
    from dicom_transfer.io.dimse import DimseSettings
    from dicom_transfer.pipelines.export_pipeline import ExportConfig
    from dicom_transfer.pipelines.import_pipeline import ImportConfig
    from dicom_transfer.pipelines.migrate import MigrateConfig

LOG = logging.getLogger(__name__)
IMPORT_REPORTS = "dicom-transfer-reports"  # import has no destination folder: reports go here


__all__ = ["UsageError", "check_stores", "copy_config", "export_config", "import_config", "migrate_config",
           "verify_config"]


def collect_patterns(inputs: list[str] | None, input_list: str | None) -> list[str]:
    """Patterns from ``--input`` and ``--input-list``, each checked; raises UsageError."""
    patterns = list(inputs or [])
    if input_list:
        try:
            patterns += [text for text, _ in read_list_file(input_list, stdin=True)]
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read --input-list {input_list}: {exc}") from exc
    if not patterns:
        raise UsageError("no input: give --input PATTERN or --input-list FILE")
    for pattern in patterns:
        try:
            parse_pattern(pattern)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
    return list(dict.fromkeys(patterns))


URL_OPTIONS = (("input", "--input"), ("input_list", "--input-list"), ("filter_file", "--filter-file"),
               ("identifiers_file", "--identifiers-file"), ("output", "--output"), ("errors", "--errors"),
               ("summary", "--summary"))


def check_schemes(options: argparse.Namespace) -> None:
    """Every location option names a supported scheme whose backend is installed (exit 2 otherwise)."""
    try:
        for name, flag in URL_OPTIONS:
            values = getattr(options, name, None)
            for value in values if isinstance(values, list) else [values]:
                if value and value != "-":
                    check_scheme(value, flag)
    except StoreUnavailable as exc:
        raise UsageError(str(exc)) from exc


def check_stores(patterns, destination: str | None, reports: RunReports | None = None) -> None:
    """The buckets the run needs exist and answer, and what it writes can be written (exit 2 otherwise)."""
    try:
        for pattern in patterns:
            check_bucket(pattern, "source")
        if destination:
            check_bucket(destination, "destination")
            if scheme_of(destination) is None:
                check_writable_folder(destination, "--output")
        for url, what in ((reports.errors_url, "errors.log"), (reports.summary_url, "summary")) if reports else ():
            if scheme_of(url) is None:
                check_writable_file(url, what)
            elif not destination or not url.startswith(destination):
                check_bucket(url, what)
    except StoreUnavailable as exc:
        raise UsageError(str(exc)) from exc


def check_filter_file(url: str | None) -> None:
    """A malformed or empty filter file stops every pipeline before it starts (exit 2)."""
    check_selection_files(None, url)


def check_selection_files(identifiers_file: str | None, filter_file: str | None,
                          identifiers: list[str] | None = None) -> None:
    """Identifiers and filter files are read whole before the run: a malformed line or a file that
    selects nothing is a mistake to fix before hours of transfer, in every pipeline (exit 2)."""
    for text in identifiers or ():
        try:
            parse_identifier(text, "--identifier")
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
    for url, flag, parse in ((identifiers_file, "--identifiers-file", parse_identifier),
                             (filter_file, "--filter-file", parse_filter_line)):
        if not url:
            continue
        problems, count = [], 0
        try:
            for text, where in read_list_file(url):
                try:
                    parse(text, where)
                    count += 1
                except ValueError as exc:
                    problems.append(str(exc))
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read {flag} {url}: {exc}") from exc
        if problems:
            more = f" (and {len(problems) - 3} more malformed lines)" if len(problems) > 3 else ""
            raise UsageError("; ".join(problems[:3]) + more)
        if not count:
            raise UsageError(f"{flag} {url} names nothing (no line besides blanks and # comments)")


def run_reports(operation_type: str, options, report_base: str, layout_name: str = "uid",
                dry_run: bool = False) -> RunReports:
    """Operation id and report locations (``report_base`` as for ``default_report_dir``)."""
    operation_id = options.operation_id or new_operation_id()
    report_dir = default_report_dir(report_base, layout_name, operation_id)
    copy = options.summary if options.summary == "-" or _is_device(options.summary) else None
    return RunReports(operation_type, operation_id, utc_now_iso(),
                      options.errors or f"{report_dir}/errors.log",
                      f"{report_dir}/summary.json" if copy or not options.summary else options.summary,
                      dry_run, summary_copy=copy, manifest=getattr(options, "manifest", None))


def _is_device(path: str | None) -> bool:
    """A local path that exists and is not a regular file (/dev/stdout, a FIFO)."""
    if not path or scheme_of(path) is not None:
        return False
    return os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path)


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
    check_schemes(options)
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
        deid=deid_config(options),
        previous_manifest=previous_manifest(options),
    )


MAX_DEFAULT_PROCESSES = 4  # beyond, the pipeline's own process is the bottleneck (~0.1 ms a file)


def copy_processes(config: CopyConfig, requested: int | None, options, local: bool) -> int:
    """How many processes copy the files (:class:`~dicom_transfer.io.processes.WorkerProcesses`):
    ``--processes``, else one per core (at most MAX_DEFAULT_PROCESSES) for a copy between local
    disks on the in-process DirectRunner on Linux, where Python's CPU time per file is what limits
    it; 1 (no worker processes) elsewhere: other runners' workers are processes already, and with an
    object store the threads that hide its latency are what count. Raises UsageError."""
    from apache_beam.options.pipeline_options import DirectOptions

    in_process = local and options.view_as(DirectOptions).direct_running_mode == "in_memory"
    one_step = config.streams or config.deidentifies_in_one_step  # the steps that copy file by file
    if requested is not None:
        if requested > 1 and not (one_step and config.between_local_disks):
            raise UsageError("--processes applies to a copy between local disks (with --deidentify: "
                             "without --filter-file)")
        if requested > 1 and not in_process:
            raise UsageError("--processes applies to the DirectRunner in-process (other runners' and "
                             "multi_processing's workers are processes already)")
        return requested
    if not (in_process and one_step and config.between_local_disks and config.io_threads <= 1):
        return 1
    if not sys.platform.startswith("linux"):  # macOS: fork() with threads can crash system libraries
        return 1
    return max(1, min(usable_cores(), MAX_DEFAULT_PROCESSES))


def in_one_process(options, local: bool) -> bool:
    """Whether the runner executes the whole pipeline in this process, one bundle at a time through
    fused steps: the DirectRunner in_memory with one worker (not the BundleBasedDirectRunner, whose
    steps each take all their input at once)."""
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    direct = options.view_as(DirectOptions)
    return (local and direct.direct_running_mode == "in_memory" and direct.direct_num_workers == 1
            and options.view_as(StandardOptions).runner != "BundleBasedDirectRunner")


def usable_cores() -> int:
    """The cores this process may run on, and at most its control group's CPU quota (a container's
    ``--cpus``: cgroup v2 ``cpu.max``)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        with open("/sys/fs/cgroup/cpu.max") as limits:
            quota, period = limits.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def check_readable(url: str, flag: str) -> None:
    """``url`` can be opened and read, or the run stops now (exit 2)."""
    from dicom_transfer.io.files import open_url

    try:
        with open_url(url) as source:
            source.read(1)
    except OSError as exc:
        raise UsageError(f"{flag} {redact(url)}: cannot read it ({exc.strerror or exc})") from exc


def previous_manifest(options: argparse.Namespace) -> str | None:
    """The manifest whose successes a copy need not read again: ``--previous-manifest``, else the
    newest in the default report folders of the destination, looked for now (a first run has
    none, and its pipeline then has no quick-check step at all); None with ``--checksum``."""
    from dicom_transfer.io.manifests import find_previous_manifest

    if options.checksum:
        return None
    if options.filter_file or getattr(options, "deidentify", None):  # see CopyConfig.skip_unchanged
        if options.previous_manifest:
            raise UsageError("--previous-manifest does not apply with --filter-file or --deidentify "
                             "(every source is read)")
        return None
    if options.previous_manifest:
        check_readable(options.previous_manifest, "--previous-manifest")
        return options.previous_manifest
    layout_name = "azure" if options.layout == "azure" else "uid"
    pattern = default_report_dir(options.output.rstrip("/") or options.output, layout_name, "*") + "/manifest.jsonl"
    return find_previous_manifest(pattern)


def verify_config(options: argparse.Namespace):
    """Check the verify options and build its configuration; raises UsageError."""
    from dicom_transfer.pipelines.verify import VerifyConfig

    if bool(options.output) == bool(options.dicomweb_url):
        raise UsageError("give the destination of the verified run: --output DEST or --dicomweb-url URL")
    check_readable(options.verified_manifest, "--manifest")
    base = options.verified_manifest.rpartition("/")[0] or "."
    options.operation_id = options.operation_id or f"verify-{new_operation_id()}"
    reports = run_reports("verify", options, base, layout_name="azure")  # BASE/<operation id>/
    reports = dataclasses.replace(reports, manifest=reports.beside_summary("manifest.jsonl"))
    if options.dicomweb_url:
        return VerifyConfig(options.verified_manifest, reports, client=dicomweb_client(options),
                            checksum=options.checksum)
    try:
        # the azure layout's folder is the verified run's operation id: that of its report folder
        layout = Layout.parse(options.layout, base.rstrip("/").rpartition("/")[2] or "run")
    except ValueError as exc:
        raise UsageError(f"--layout: {exc}") from exc
    return VerifyConfig(options.verified_manifest, reports, destination=options.output.rstrip("/") or options.output,
                        layout=layout, checksum=options.checksum)


def dicomweb_client(options, prefix: str = "") -> DicomwebClient:
    """A checked client for ``--dicomweb-url`` (``--source-dicomweb-url`` with prefix ``source_``):
    exit 2 if the server cannot be used."""
    from dicom_transfer.io.auth import AuthConfig, AuthError
    from dicom_transfer.io.dicomweb import DicomwebClient, DicomwebError
    from dicom_transfer.io.retry import RetryPolicy

    def value(name: str):
        return getattr(options, prefix + name)

    url, flag = value("dicomweb_url"), f"--{prefix.replace('_', '-')}dicomweb-url"
    if urlsplit(url).scheme not in ("http", "https"):
        raise UsageError(f"{flag} must be an http(s) URL, not {redact(url)!r}")
    auth = AuthConfig(method=value("auth"), token_env=value("token_env"),
                      token_command=value("token_command"), token_lifetime=value("token_lifetime"),
                      username=value("username"), password_env=value("password_env"))
    try:
        client = DicomwebClient(url, auth, value("ca_bundle"),
                                timeout=value("request_timeout"),
                                retry=RetryPolicy(attempts=value("max_attempts")),
                                pool_size=max(4, options.concurrency * 2))
        client.check()
    except (AuthError, DicomwebError) as exc:
        raise UsageError(f"cannot use {redact_url(url)}: {exc}") from exc
    return client


def require_report_locations(options: argparse.Namespace, local: bool, operation_type: str = "import") -> None:
    """A run whose destination is a server names where its reports go on a distributed runner."""
    if not local and not (options.errors and options.summary and options.summary != "-"):
        raise UsageError("on a distributed runner, give --errors and --summary (e.g. gs:// paths): "
                         f"{operation_type} has no destination folder to put them in")


def _reports_without_destination(operation_type: str, options: argparse.Namespace, local: bool) -> RunReports:
    """Reports of a run whose destination is a server: ``--errors``/``--summary`` or a local folder."""
    require_report_locations(options, local, operation_type)
    return run_reports(operation_type, options, IMPORT_REPORTS, layout_name="azure", dry_run=options.dry_run)


IMPORT_CONCURRENCY = {True: 8, False: 4}  # STOW-RS requests in flight per worker thread: in one process, elsewhere


def import_config(options: argparse.Namespace, local: bool = True, in_process: bool = False) -> ImportConfig:
    """Check the import options and build the run's configuration; raises UsageError.

    ``local``: the runner runs here (a distributed one needs explicit report locations).
    ``in_process``: the runner executes the whole pipeline in this process (see
    :func:`in_one_process`): no grouping before sending, and by default 8 requests in flight
    rather than the 4 per thread of runners with many worker threads.
    """
    from dicom_transfer.pipelines.import_pipeline import ImportConfig

    reports = _reports_without_destination("import", options, local)
    check_schemes(options)
    patterns = collect_patterns(options.input, options.input_list)
    check_filter_file(options.filter_file)
    if options.concurrency is None:
        options = argparse.Namespace(**{**vars(options), "concurrency": IMPORT_CONCURRENCY[in_process]})
    client = dicomweb_client(options)
    return ImportConfig(
        patterns=tuple(patterns), client=client, reports=reports, filter_file=options.filter_file,
        max_instances=options.max_instances_per_request, max_bytes=options.max_request_bytes,
        concurrency=options.concurrency, check_existing=options.check_existing, strict=options.strict,
        in_one_process=in_process)


def export_config(options: argparse.Namespace) -> ExportConfig:
    """Check the export options and build the run's configuration; raises UsageError."""
    from dicom_transfer.pipelines.export_pipeline import ExportConfig

    check_schemes(options)
    check_selection_files(options.identifiers_file, options.filter_file, options.identifier)
    deid = deid_config(options)  # a missing key stops the run before the server is asked anything
    client = dicomweb_client(options)
    reports, layout = output_layout("export", options)
    return ExportConfig(
        client=client, destination=options.output.rstrip("/") or options.output, layout=layout,
        reports=reports,
        identifiers=tuple(options.identifier or ()), identifiers_file=options.identifiers_file,
        filter_file=options.filter_file, all_studies=options.export_all,
        transfer_syntax=options.transfer_syntax, overwrite=options.overwrite, deid=deid)


def migrate_destination(options: argparse.Namespace) -> DicomwebClient | DimseSettings:
    """``--dicomweb-url`` (checked) or ``--dimse-destination`` (answered by a C-ECHO), exactly
    one; raises UsageError."""
    pacs = getattr(options, "dimse_destination", None)
    if pacs and options.dicomweb_url:
        raise UsageError("give --dicomweb-url or --dimse-destination, not both")
    if not pacs:
        if not options.dicomweb_url:
            raise UsageError("give --dicomweb-url URL or --dimse-destination dimse://AE@HOST:PORT")
        return dicomweb_client(options)
    if options.verify_bytes:
        raise UsageError("--verify-bytes reads each instance back with WADO-RS: not with --dimse-destination "
                         "(the verifying C-FIND per series runs all the same)")
    from dicom_transfer.pipelines.dimse import dimse_settings  # it builds on this module

    return dimse_settings(options, pacs, "--dimse-destination")


def migrate_config(options: argparse.Namespace, local: bool = True) -> MigrateConfig:
    """Check the migrate options and both servers, and build the run's configuration; raises UsageError."""
    from dicom_transfer.io.dicomweb import DicomwebClient
    from dicom_transfer.pipelines.migrate import MigrateConfig

    reports = _reports_without_destination("migrate", options, local)
    check_schemes(options)
    check_selection_files(options.identifiers_file, options.filter_file, options.identifier)
    deid = deid_config(options)  # a missing key stops the run before the servers are asked anything
    source = dicomweb_client(options, prefix="source_")
    destination = migrate_destination(options)
    if isinstance(destination, DicomwebClient) and source.url == destination.url:
        raise UsageError("--source-dicomweb-url and --dicomweb-url name the same server")
    return MigrateConfig(
        source=source, destination=destination, reports=reports,
        identifiers=tuple(options.identifier or ()), identifiers_file=options.identifiers_file,
        filter_file=options.filter_file, all_studies=options.export_all,
        max_instances=options.max_instances_per_request, max_bytes=options.max_request_bytes,
        concurrency=options.concurrency, verify_bytes=options.verify_bytes, deid=deid)
