"""The product's options, as Beam ``PipelineOptions`` subclasses.

One definition serves ``--help``, the CLI, Flex Templates and programmatic
use: ``PipelineOptions(argv).view_as(OutputOptions)``. Each option is defined
once; a command is a set of these classes (``COPY_OPTIONS``, ``IMPORT_OPTIONS``).
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions


def add_report_arguments(parser) -> None:
    parser.add_argument(
        "--operation-id", "--operation_id", dest="operation_id", default=None,
        help="Id of this run (default: a new UUID hex). Names the report folder and, "
             "with --layout azure, the output folder.")
    parser.add_argument(
        "--errors", dest="errors", default=None,
        help="Where to write errors.log (JSON lines {Timestamp, Identifier, Error, Stage}). "
             "Default: DEST/<operation id>/errors.log with --layout azure, else "
             "DEST/.dicom-transfer/<operation id>/errors.log.")
    parser.add_argument(
        "--summary", dest="summary", default=None,
        help="Where to write the summary JSON (Azure operation-status shape). "
             "Default: summary.json beside the default errors.log.")
    parser.add_argument(
        "--detach", dest="detach", action="store_true", default=False,
        help="Submit the job and return without waiting for it (Flex Templates, schedulers); "
             "the pipeline writes errors.log and the summary itself.")


def add_input_arguments(parser) -> None:
    parser.add_argument(
        "--input", dest="input", action="append", default=None, metavar="PATTERN",
        help="Files to read: a path or URL with Google wildcards ('*' within a folder, "
             "'?' one character, '**' recursively at the end, e.g. 'data/**.dcm'); "
             "a folder means everything below it. Repeatable.")
    parser.add_argument(
        "--input-list", "--input_list", dest="input_list", default=None, metavar="FILE",
        help="A file with one PATTERN per line (blank lines and # comments ignored).")


class InputOptions(PipelineOptions):
    """Where instances are read from: ``--input``, ``--input-list``."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        add_input_arguments(parser)


class FilterOptions(PipelineOptions):
    """``--filter-file``: a Google filter file selecting studies, series or instances."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument(
            "--filter-file", "--filter_file", dest="filter_file", default=None, metavar="FILE",
            help="Google filter file: lines /studies/S[/series/SE[/instances/I]]. copy and import "
                 "transfer only the instances it names (the others are counted as filtered); "
                 "export exports exactly what it names.")


class ReportOptions(PipelineOptions):
    """Identity of a run and where its reports go."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        add_report_arguments(parser)


class OutputOptions(PipelineOptions):
    """Where instances are written: ``--output``, ``--layout``, ``--overwrite``, ``--dry-run``."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument(
            "--output", dest="output", default=None, metavar="DEST",
            help="Destination folder or URL (required).")
        parser.add_argument(
            "--layout", dest="layout", default="uid",
            help="uid (default): STUDY/SERIES/SOP.dcm; azure: <operation id>/results/STUDY/"
                 "SERIES/SOP.dcm; or a template of DICOM keywords such as "
                 "'{PatientID}/{StudyDate}/{Modality}/{SOPInstanceUID}.dcm'.")
        parser.add_argument(
            "--overwrite", dest="overwrite", action="store_true", default=False,
            help="Replace outputs that exist with different content (default: report them).")
        parser.add_argument(
            "--io-threads", "--io_threads", dest="io_threads", type=int, default=0,
            help="copy: files read and written at once per worker thread (default: 1 when source and "
                 "destination are local disks, where more only adds contention; 8 with object "
                 "stores, whose latency they hide).")
        parser.add_argument(
            "--dry-run", dest="transfer_dry_run", action="store_true", default=False,
            help="Expand and validate, report what would be written, write no instance.")


def add_dicomweb_arguments(parser) -> None:
    parser.add_argument(
        "--dicomweb-url", "--dicomweb_url", dest="dicomweb_url", default=None, metavar="URL",
        help="DICOMweb service root, e.g. https://host/dicom-web (required).")
    parser.add_argument(
        "--auth", dest="auth", default="auto",
        choices=["auto", "none", "bearer", "basic", "google", "azure"],
        help="auto (default): a bearer token if $DICOMWEB_TOKEN or --token-command is set, basic if "
             "--username is set, Google ADC for healthcare.googleapis.com, Azure AD for "
             "*.dicom.azurehealthcareapis.com, else none.")
    parser.add_argument(
        "--token-env", "--token_env", dest="token_env", default="DICOMWEB_TOKEN", metavar="VAR",
        help="Environment variable holding a bearer token (default DICOMWEB_TOKEN).")
    parser.add_argument(
        "--token-command", "--token_command", dest="token_command", default=None, metavar="CMD",
        help="Command printing a bearer token, run again when it expires or on a 401 "
             "(e.g. 'gcloud auth print-access-token').")
    parser.add_argument(
        "--token-lifetime", "--token_lifetime", dest="token_lifetime", type=float, default=2700,
        help="Seconds a --token-command token is reused (default 2700).")
    parser.add_argument(
        "--username", dest="username", default=None, help="HTTP basic user name.")
    parser.add_argument(
        "--password-env", "--password_env", dest="password_env", default="DICOMWEB_PASSWORD",
        metavar="VAR", help="Environment variable holding the HTTP basic password.")
    parser.add_argument(
        "--ca-bundle", "--ca_bundle", dest="ca_bundle", default=None, metavar="PEM",
        help="CA certificates to trust for the server (TLS verification is always on).")
    parser.add_argument(
        "--request-timeout", "--request_timeout", dest="request_timeout", type=float, default=300,
        help="Seconds to wait for a server answer (default 300).")
    parser.add_argument(
        "--max-attempts", "--max_attempts", dest="max_attempts", type=int, default=6,
        help="Tries per request for 429, 5xx and connection errors, with exponential "
             "backoff and jitter (default 6).")
    parser.add_argument(
        "--concurrency", dest="concurrency", type=int, default=4,
        help="Requests in flight per worker thread (default 4).")


class DicomwebOptions(PipelineOptions):
    """The DICOMweb server, its credentials, TLS, retries and concurrency."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        add_dicomweb_arguments(parser)


class ImportOptions(PipelineOptions):
    """STOW-RS batching of ``dicom-transfer import``."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument(
            "--max-instances-per-request", "--max_instances_per_request", dest="max_instances_per_request",
            type=int, default=32, help="Instances per STOW-RS request (default 32).")
        parser.add_argument(
            "--max-request-bytes", "--max_request_bytes", dest="max_request_bytes", type=int,
            default=32 << 20, help="Bytes per STOW-RS request (default 32 MiB); a larger instance "
                                   "is sent alone, streamed.")
        parser.add_argument(
            "--no-check-existing", "--no_check_existing", dest="check_existing", action="store_false",
            default=True, help="Do not ask the server (QIDO-RS) which instances it already holds "
                               "before sending; rely on its STOW-RS answers.")


class ExportOptions(PipelineOptions):
    """What ``dicom-transfer export`` takes from the server."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument(
            "--identifier", dest="identifier", action="append", default=None, metavar="ID",
            help="Azure export identifier StudyInstanceUID[/SeriesInstanceUID[/SOPInstanceUID]]. "
                 "Repeatable.")
        parser.add_argument(
            "--identifiers-file", "--identifiers_file", dest="identifiers_file", default=None,
            metavar="FILE", help="A file with one identifier per line.")
        parser.add_argument(
            "--all", dest="export_all", action="store_true", default=False,
            help="Export every instance of the store (QIDO-RS with paging).")
        parser.add_argument(
            "--transfer-syntax", "--transfer_syntax", dest="transfer_syntax", default="*",
            help="Transfer syntax to ask WADO-RS for; '*' (default) means as stored.")


COPY_OPTIONS = (InputOptions, FilterOptions, OutputOptions, ReportOptions)
EXPORT_OPTIONS = (ExportOptions, FilterOptions, OutputOptions, DicomwebOptions, ReportOptions)
IMPORT_OPTIONS = (InputOptions, FilterOptions, DicomwebOptions, ImportOptions, ReportOptions)
