"""The command line's options: one definition per option, plain ``argparse``.

A subcommand is a tuple of option groups (functions that add their options to
a parser); ``COMMANDS`` says which groups each subcommand takes, so that a
subcommand refuses every option it does not support. Nothing here imports
Beam: ``--help`` and ``--version`` answer at once, and the run configuration
is built from the parsed namespace (see ``pipelines.configs``). Beam's own
options (``--runner``...) are parsed by Beam, from what is left.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Callable

from dicom_transfer.uids import uid_problem

LOG_LEVELS = ("debug", "info", "warning", "error")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "ki": 2**10, "m": 10**6, "mb": 10**6,
          "mib": 2**20, "mi": 2**20, "g": 10**9, "gb": 10**9, "gib": 2**30, "gi": 2**30,
          "t": 10**12, "tb": 10**12, "tib": 2**40, "ti": 2**40}
_OPERATION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class UsageError(Exception):
    """The invocation is invalid: reported before the pipeline starts, exit status 2."""


# -- value types: a bad value is refused by argparse (exit 2, naming the option) -----------------

def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def byte_size(text: str) -> int:
    """``33554432``, ``32MiB``, ``32 MiB``, ``1.5GB`` -> bytes (``KB`` = 1000, ``KiB`` = 1024)."""
    match = _SIZE.match(text)
    unit = (match.group(2) or "").lower() if match else None
    if not match or unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 33554432, 32MiB, 500KB)")
    value = int(float(match.group(1)) * _UNITS[unit])
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1 byte")
    return value


def operation_id(text: str) -> str:
    """An id that is one safe path part: it names the report folder (and the azure layout's)."""
    if not _OPERATION_ID.match(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a valid operation id: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit")
    return text


def transfer_syntax(text: str) -> str:
    if text == "*":
        return text
    problem = uid_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(f"{text!r} is not '*' nor a transfer syntax UID: {problem}")
    return text


# -- option groups --------------------------------------------------------------------------------

def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("input (give --input or --input-list)")
    group.add_argument(
        "--input", dest="input", action="append", default=None, metavar="PATTERN",
        help="Files to read: a path or URL with Google wildcards ('*' within a folder, "
             "'?' one character, '**' recursively at the end, e.g. 'data/**.dcm'); "
             "a folder means everything below it. Quote it, so that the shell does not expand it. "
             "Repeatable.")
    group.add_argument(
        "--input-list", "--input_list", dest="input_list", default=None, metavar="FILE",
        help="A file with one PATTERN per line (blank lines and # comments ignored); '-' reads "
             "standard input.")
    group.add_argument(
        "--filter-file", "--filter_file", dest="filter_file", default=None, metavar="FILE",
        help="Google filter file: lines /studies/S[/series/SE[/instances/I]]. Only the instances it "
             "names are transferred (the others are counted as filtered).")
    group.add_argument(
        "--strict", dest="strict", action="store_true", default=False,
        help="A pattern or filter-file line that matches nothing is a failure (exit status 1) "
             "instead of a warning.")


def add_selection_arguments(parser: argparse.ArgumentParser, verb: str = "export", done: str = "exported",
                            transfer_syntax_option: bool = True) -> None:
    group = parser.add_argument_group(f"what to {verb} (exactly one)")
    choice = group.add_mutually_exclusive_group(required=True)
    choice.add_argument(
        "--identifier", dest="identifier", action="append", default=None, metavar="ID",
        help="Azure export identifier StudyInstanceUID[/SeriesInstanceUID[/SOPInstanceUID]]. "
             "Repeatable.")
    choice.add_argument(
        "--identifiers-file", "--identifiers_file", dest="identifiers_file", default=None,
        metavar="FILE", help="A file with one identifier per line (blank lines and # comments ignored).")
    choice.add_argument(
        "--filter-file", "--filter_file", dest="filter_file", default=None, metavar="FILE",
        help="Google filter file: lines /studies/S[/series/SE[/instances/I]]; exactly what it names "
             f"is {done}.")
    choice.add_argument(
        "--all", dest="export_all", action="store_true", default=False,
        help="Every instance of the store (QIDO-RS with paging).")
    if not transfer_syntax_option:  # migrate always moves the stored bytes
        return
    parser.add_argument(
        "--transfer-syntax", "--transfer_syntax", dest="transfer_syntax", default="*", type=transfer_syntax,
        metavar="UID", help="Transfer syntax to ask WADO-RS for; '*' (default) means as stored.")


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument(
        "--output", dest="output", required=True, metavar="DEST",
        help="Destination folder or URL (gs://, s3://, az://).")
    group.add_argument(
        "--layout", dest="layout", default="uid",
        help="uid (default): STUDY/SERIES/SOP.dcm; azure: <operation id>/results/STUDY/"
             "SERIES/SOP.dcm; or a template of DICOM keywords such as "
             "'{PatientID}/{StudyDate}/{Modality}/{SOPInstanceUID}.dcm'.")
    group.add_argument(
        "--overwrite", dest="overwrite", action="store_true", default=False,
        help="Replace outputs that exist with different content (default: report them).")


def add_quick_check_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("re-runs")
    group.add_argument(
        "--previous-manifest", "--previous_manifest", dest="previous_manifest", default=None, metavar="PATH",
        help="An earlier run's manifest.jsonl: a source it moved, with the same URL, size and modification "
             "time (or listed MD5), whose output is still there with the same size, is counted unchanged "
             "without being read. Default: the newest manifest of an earlier run in the default report "
             "folder of DEST.")
    group.add_argument(
        "--checksum", dest="checksum", action="store_true", default=False,
        help="Read and compare every source, even those an earlier run's manifest says are unchanged.")


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("what to verify")
    group.add_argument(
        "--manifest", dest="verified_manifest", required=True, metavar="PATH",
        help="The manifest.jsonl of the run to verify.")
    group.add_argument(
        "--output", dest="output", default=None, metavar="DEST",
        help="The destination folder or URL the run wrote to (copy, export).")
    group.add_argument(
        "--layout", dest="layout", default="uid",
        help="The layout the run wrote with (uid, azure, or its template); uid and azure also find stray "
             "instances in each series folder.")
    group.add_argument(
        "--checksum", dest="checksum", action="store_true", default=False,
        help="Also read every output present and compare its SHA-256 with the manifest's, where it has one.")
    group.add_argument(
        "--operation-id", "--operation_id", dest="operation_id", default=None, type=operation_id, metavar="ID",
        help="Id of this verification (default: a new UUID hex).")
    group.add_argument(
        "--errors", dest="errors", default=None, metavar="PATH",
        help="Where to write errors.log. Default: beside the manifest, in verify-<operation id>/.")
    group.add_argument(
        "--summary", dest="summary", default=None, metavar="PATH",
        help="Where to write the summary JSON ('-': standard output). Default: beside the manifest, in "
             "verify-<operation id>/, with reconciliation.csv and report.html.")
    add_dicomweb_arguments(parser, role="DICOMweb destination (import, migrate)", concurrency=False)
    for action in parser._actions:
        if action.dest == "dicomweb_url":
            action.required = False
    parser.set_defaults(detach=False, dry_run=False, manifest=None, concurrency=2)


def add_io_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--io-threads", "--io_threads", dest="io_threads", type=positive_int, default=None, metavar="N",
        help="Files read and written at once per worker thread (default: 1 when source and "
             "destination are local disks, where more only adds contention; 8 with object "
             "stores, whose latency they hide).")


def add_processes_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--processes", dest="processes", type=positive_int, default=None, metavar="N",
        help="Processes that read, validate (de-identify) and write the files of a copy to a local "
             "folder, on this machine (default: one per CPU core, at most 4, when a copy between "
             "local disks runs on the DirectRunner in-process; else 1, this process alone).")


def add_dry_run_argument(what: str, doing: str) -> Callable[[argparse.ArgumentParser], None]:
    def add(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            # no --dry_run alias: that is Dataflow's own option
            "--dry-run", dest="dry_run", action="store_true", default=False,
            help=f"Decide everything and report what would be {what}, without {doing} anything.")
    return add


def add_report_arguments(report_default: str, has_layout: bool = True) -> Callable[[argparse.ArgumentParser], None]:
    def add(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("reports")
        group.add_argument(
            "--operation-id", "--operation_id", dest="operation_id", default=None, type=operation_id,
            metavar="ID", help="Id of this run (default: a new UUID hex). Names the report folder"
                               + (" (and, with --layout azure, the output folder)." if has_layout else "."))
        group.add_argument(
            "--errors", dest="errors", default=None, metavar="PATH",
            help="Where to write errors.log (JSON lines {Timestamp, Identifier, Error, Stage}). "
                 f"Default: {report_default}/errors.log.")
        group.add_argument(
            "--summary", dest="summary", default=None, metavar="PATH",
            help="Where to write the summary JSON (Azure operation-status shape); '-' prints it on "
                 f"standard output (the human summary then goes to standard error). "
                 f"Default: {report_default}/summary.json.")
        group.add_argument(
            "--manifest", dest="manifest", default=None, metavar="PATH",
            help="Where to write manifest.jsonl (one JSON line per instance handled, whatever its outcome). "
                 "reconciliation.csv and report.html go beside the summary. "
                 f"Default: {report_default}/manifest.jsonl.")
        group.add_argument(
            "--detach", dest="detach", action="store_true", default=False,
            help="Submit the job and return without waiting for it (Flex Templates, schedulers); "
                 "the pipeline writes errors.log and the summary itself.")
    return add


def _flags(prefix: str, name: str) -> tuple[list[str], str]:
    """``(["--source-ca-bundle", "--source_ca_bundle"], "source_ca_bundle")`` for prefix ``source-``."""
    dashed = f"--{prefix}{name}"
    underscored = "--" + f"{prefix}{name}".replace("-", "_")
    return list(dict.fromkeys([dashed, underscored])), underscored[2:]


def add_dimse_arguments(role: str, replaces: str = "dicomweb_url", staging: bool = False,
                        destination_too: bool = False) -> Callable[[argparse.ArgumentParser], None]:
    """A PACS over DIMSE as the ``source`` (export, migrate) or ``destination`` (import), instead
    of the DICOMweb server option ``replaces`` (which becomes optional: pipelines.dimse checks
    that exactly one is given). ``staging``: the C-MOVE receiver stages what it receives for the
    workers (migrate) instead of writing into the destination (export). ``destination_too``:
    a PACS may be the destination as well, instead of ``--dicomweb-url`` (migrate)."""
    def add(parser: argparse.ArgumentParser) -> None:
        replaced = [replaces, "dicomweb_url"] if destination_too else [replaces]
        for action in parser._actions:
            if action.dest in replaced:
                action.required = False
        flags = " or ".join("--" + name.replace("_", "-") for name in replaced)
        group = parser.add_argument_group(f"PACS over DIMSE (instead of {flags}; pip install "
                                          "'dicom-transfer[dimse]')")
        roles = [role, "destination"] if destination_too else [role]
        for each in roles:
            group.add_argument(
                f"--dimse-{each}", f"--dimse_{each}", dest=f"dimse_{each}", default=None,
                metavar="dimse://AE@HOST:PORT",
                help=f"The PACS to {'retrieve from' if each == 'source' else 'store into'}: "
                     "its called AE title, host and port. Checked with a C-ECHO before the run.")
        group.add_argument(
            "--calling-ae", "--calling_ae", dest="calling_ae", default="DICOM-TRANSFER", metavar="AE",
            help="This side's AE title, as the PACS knows it (default DICOM-TRANSFER).")
        group.add_argument(
            "--max-associations", "--max_associations", dest="max_associations", type=positive_int, default=4,
            metavar="N", help="Associations open at once per worker process and PACS, below the PACS's limit "
                              "(default 4).")
        group.add_argument(
            "--dimse-timeout", "--dimse_timeout", dest="dimse_timeout", type=positive_float, default=60,
            metavar="SECONDS", help="Seconds to wait for a connection or an answer (default 60).")
        if role != "source":
            return
        group.add_argument(
            "--study-date", "--study_date", dest="study_date", default=None, metavar="YYYYMMDD[-YYYYMMDD]",
            help="With --all: the studies of this date range, found by study-level C-FIND in chunks.")
        group.add_argument(
            "--date-chunk-days", "--date_chunk_days", dest="date_chunk_days", type=positive_int, default=1,
            metavar="N", help="Days of --study-date per C-FIND (default 1).")
        group.add_argument(
            "--move-destination", "--move_destination", dest="move_destination", default=None, metavar="AE",
            help="Retrieve by C-MOVE to this AE title (default: C-GET, which needs no inbound port).")
        group.add_argument(
            "--move-listen", "--move_listen", dest="move_listen", default=None, metavar="HOST:PORT",
            help="Run the C-MOVE receiver for this run here (the PACS must know the move destination "
                 "at this address).")
        if staging:
            group.add_argument(
                "--move-staging", "--move_staging", dest="move_staging", default=None, metavar="URL",
                help="Where the C-MOVE receiver stages what it receives (its --output) and journals it, "
                     "for the workers to read (default with --move-listen: a temporary folder).")
            return
        group.add_argument(
            "--move-journal", "--move_journal", dest="move_journal", default=None, metavar="URL",
            help="The journal of a receiver that runs elsewhere (default DEST/.dicom-transfer/received).")
    return add


def add_dicomweb_arguments(parser: argparse.ArgumentParser, prefix: str = "", role: str = "DICOMweb server",
                           concurrency: bool = True, default_concurrency: int | None = 4,
                           concurrency_help: str | None = None) -> None:
    """The options of one DICOMweb server; ``prefix`` (e.g. ``source-``) names those of a second
    one, whose secrets come from ``SOURCE_``-prefixed environment variables by default."""
    env = prefix.upper().replace("-", "_")
    group = parser.add_argument_group(role)

    def option(name: str, **kwargs) -> None:
        flags, dest = _flags(prefix, name)
        group.add_argument(*flags, dest=dest, **kwargs)

    option("dicomweb-url", required=True, metavar="URL",
           help="DICOMweb service root, e.g. https://host/dicom-web.")
    option("auth", default="auto", choices=["auto", "none", "bearer", "basic", "google", "azure"],
           help=f"auto (default): a bearer token if ${env}DICOMWEB_TOKEN or --{prefix}token-command is set, "
                f"basic if --{prefix}username is set, Google ADC for healthcare.googleapis.com, Azure AD for "
                "*.dicom.azurehealthcareapis.com, else none.")
    option("token-env", default=f"{env}DICOMWEB_TOKEN", metavar="VAR",
           help=f"Environment variable holding a bearer token (default {env}DICOMWEB_TOKEN).")
    option("token-command", default=None, metavar="CMD",
           help="Command printing a bearer token, run again when it expires or on a 401 "
                "(e.g. 'gcloud auth print-access-token').")
    option("token-lifetime", type=positive_float, default=2700, metavar="SECONDS",
           help=f"Seconds a --{prefix}token-command token is reused (default 2700).")
    option("username", default=None, help="HTTP basic user name.")
    option("password-env", default=f"{env}DICOMWEB_PASSWORD", metavar="VAR",
           help=f"Environment variable holding the HTTP basic password (default {env}DICOMWEB_PASSWORD).")
    option("ca-bundle", default=None, metavar="PEM",
           help="CA certificates to trust for the server (TLS verification is always on).")
    option("request-timeout", type=positive_float, default=300, metavar="SECONDS",
           help="Seconds to wait for a server answer (default 300).")
    option("max-attempts", type=positive_int, default=6, metavar="N",
           help="Tries per request for 429, 5xx and connection errors, with exponential "
                "backoff and jitter (default 6).")
    if concurrency:
        option("concurrency", type=positive_int, default=default_concurrency, metavar="N",
               help=f"Requests in flight per worker thread ({concurrency_help or f'default {default_concurrency}'}).")


def add_import_destination_arguments(parser: argparse.ArgumentParser) -> None:
    """The DICOMweb destination of ``import``. STOW-RS requests in flight, by default: 8 on the
    in-process DirectRunner, where the store step is fed as files are read (8 measured 4.2 x the
    dicomweb-client loop against 3.8 x for 4: ``benchmarks/bench_import.py``, 2026-11-29); 4 per
    worker thread elsewhere, where a worker has many threads (``configs.import_config``)."""
    add_dicomweb_arguments(parser, default_concurrency=None,
                           concurrency_help="default 8 on the in-process DirectRunner, 4 on other runners")


def add_stow_arguments(parser: argparse.ArgumentParser, check_existing: bool = True) -> None:
    group = parser.add_argument_group("STOW-RS requests")
    group.add_argument(
        "--max-instances-per-request", "--max_instances_per_request", dest="max_instances_per_request",
        type=positive_int, default=32, metavar="N", help="Instances per STOW-RS request (default 32).")
    group.add_argument(
        "--max-request-bytes", "--max_request_bytes", dest="max_request_bytes", type=byte_size,
        default=32 << 20, metavar="SIZE",
        help="Bytes per STOW-RS request, e.g. 33554432 or 32MiB (default 32 MiB); a larger instance is "
             "sent alone, streamed.")
    if not check_existing:  # migrate asks once per series, before anything moves
        return
    group.add_argument(
        "--no-check-existing", "--no_check_existing", dest="check_existing", action="store_false",
        default=True, help="Do not ask the server (QIDO-RS) which instances it already holds "
                           "before sending; rely on its STOW-RS answers.")


def add_migrate_arguments(parser: argparse.ArgumentParser) -> None:
    """Both servers' options (the source's prefixed ``--source-``), STOW-RS and verification."""
    add_selection_arguments(parser, verb="migrate", done="migrated", transfer_syntax_option=False)
    add_dicomweb_arguments(parser, prefix="source-", role="source DICOMweb server", concurrency=False)
    add_dicomweb_arguments(parser, role="destination DICOMweb server")
    add_stow_arguments(parser, check_existing=False)
    parser.add_argument(
        "--verify-bytes", "--verify_bytes", dest="verify_bytes", action="store_true", default=False,
        help="After storing, retrieve each stored instance from the destination again and compare its "
             "SHA-256 with what was sent (one more request per instance).")


def add_deid_arguments(parser: argparse.ArgumentParser) -> None:
    """De-identification in flight (PS3.15 Annex E); the options are named after the standard's."""
    group = parser.add_argument_group(
        "de-identification (PS3.15 Annex E Basic Application Level Confidentiality Profile)")
    group.add_argument(
        "--deidentify", dest="deidentify", choices=["basic"], default=None,
        help="basic: de-identify every instance on the way (Table E.1-1 actions; UIDs, Patient ID and "
             "date offsets replaced by keyed pseudonyms, the same in every run with the same key).")
    group.add_argument(
        "--deid-key-env", "--deid_key_env", dest="deid_key_env", default=None, metavar="VAR",
        help="Environment variable holding the secret key of the pseudonyms (at least 16 bytes).")
    group.add_argument(
        "--deid-key-file", "--deid_key_file", dest="deid_key_file", default=None, metavar="FILE",
        help="File (or object) holding the secret key, read by each worker.")
    group.add_argument(
        "--deid-mapping", "--deid_mapping", dest="deid_mapping", default=None, metavar="PATH",
        help="Write the mapping table (original -> pseudonym for the Patient ID and every UID, one row "
             "each, CSV, mode 0600) to PATH.")
    group.add_argument(
        "--allow-burned-in", "--allow_burned_in", dest="allow_burned_in", action="store_true", default=False,
        help="Pass instances that have (or may have) burned-in annotation, their pixels unchanged, "
             "instead of failing them.")
    group.add_argument(
        "--retain-safe-private", "--retain_safe_private", dest="retain_safe_private", default=None,
        metavar="FILE", help="Retain Safe Private Option: keep the private attributes listed in FILE, one "
                             "'(gggg,xxee) PRIVATE CREATOR' per line (all others are removed).")
    for name, standard in (
            ("retain-uids", "Retain UIDs Option"),
            ("retain-device-identity", "Retain Device Identity Option"),
            ("retain-institution-identity", "Retain Institution Identity Option"),
            ("retain-patient-characteristics", "Retain Patient Characteristics Option"),
            ("retain-longitudinal-full-dates", "Retain Longitudinal Temporal Information with Full Dates Option"),
            ("retain-longitudinal-modified-dates",
             "Retain Longitudinal Temporal Information with Modified Dates Option (dates moved by a keyed "
             "per-patient offset)"),
            ("clean-descriptors", "Clean Descriptors Option (descriptions kept, without the instance's "
                                  "identifying values)"),
            ("clean-structured-content", "Clean Structured Content Option")):
        group.add_argument(f"--{name}", f"--{name.replace('-', '_')}", dest=name.replace("-", "_"),
                           action="store_true", default=False, help=f"{standard}.")


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("logging and progress")
    group.add_argument("-v", "--verbose", dest="verbose", action="count", default=0,
                       help="More detail (-v: debug lines of this product; -vv: also Beam's).")
    group.add_argument("-q", "--quiet", dest="quiet", action="store_true", default=False,
                       help="Only warnings, errors and the final summary; no progress display.")
    group.add_argument("--log-level", "--log_level", dest="log_level", choices=LOG_LEVELS, default=None,
                       help="Level of this product's log lines (default info).")
    group.add_argument("--log-file", "--log_file", dest="log_file", default=None, metavar="PATH",
                       help="Also write the log lines to PATH.")
    group.add_argument("--log-format", "--log_format", dest="log_format", choices=("text", "json"),
                       default="text", help="json: one JSON object per line (progress, run results) for "
                                            "schedulers and log pipelines.")
    group.add_argument("--progress", dest="progress", choices=("auto", "bar", "lines", "none"), default="auto",
                       help="auto (default): a progress bar on a terminal, periodic lines otherwise.")
    group.add_argument("--progress-interval", "--progress_interval", dest="progress_interval", type=positive_float,
                       default=10.0, metavar="SECONDS", help="Seconds between progress lines (default 10).")


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default=None, help="Working folder (default: a new temporary one).")


@dataclasses.dataclass(frozen=True)
class Command:
    """A subcommand: its help texts and the option groups it takes."""

    name: str
    summary: str
    description: str
    groups: tuple[Callable[[argparse.ArgumentParser], None], ...]
    examples: str


BEAM_OPTIONS_NOTE = (
    "Apache Beam pipeline options are accepted too, e.g. --runner DataflowRunner --project P "
    "--region R --temp_location gs://B/tmp, or --direct_running_mode multi_processing "
    "--direct_num_workers 2.")

COMMANDS = {
    command.name: command for command in (
        Command(
            "copy", "copy files matched by wildcards to a per-UID layout",
            "Copy DICOM files matched by wildcards, validating each, to a layout built from their UIDs.",
            (add_input_arguments, add_output_arguments, add_io_threads_argument, add_processes_argument,
             add_dry_run_argument("written", "writing"), add_report_arguments("DEST/.dicom-transfer/<operation id>"),
             add_quick_check_arguments, add_logging_arguments, add_deid_arguments),
            "  dicom-transfer copy --input '/data/incoming/**.dcm' --output /data/by-uid\n"
            "  dicom-transfer copy --input 'gs://incoming/2024-*/**' --output gs://archive/by-uid --layout azure\n"
            "  dicom-transfer copy --input-list patterns.txt --filter-file wanted.txt --output out --dry-run"),
        Command(
            "import", "store files matched by wildcards on a DICOMweb server (STOW-RS)",
            "Validate DICOM files matched by wildcards and store them on a DICOMweb server with batched "
            "STOW-RS requests.",
            (add_input_arguments, add_import_destination_arguments, add_dimse_arguments("destination"),
             add_stow_arguments,
             add_dry_run_argument("stored", "storing"),
             add_report_arguments("./dicom-transfer-reports/<operation id>", has_layout=False), add_logging_arguments),
            "  dicom-transfer import --input '/data/incoming/**.dcm' --dicomweb-url http://pacs:8042/dicom-web\n"
            "  DICOMWEB_TOKEN=... dicom-transfer import --input 'gs://incoming/**' \\\n"
            "      --dicomweb-url https://dicom.example.org/dicom-web --max-request-bytes 64MiB\n"
            "  dicom-transfer import --input in/ --dicomweb-url http://localhost:8042/dicom-web --dry-run"),
        Command(
            "export", "export instances from a DICOMweb server to a per-UID layout",
            "Export studies, series or instances (by identifiers, a filter file, or the whole store) from a "
            "DICOMweb server with QIDO-RS and WADO-RS, validate them, and write them to a layout.",
            (add_selection_arguments, add_output_arguments, add_dicomweb_arguments, add_dimse_arguments("source"),
             add_dry_run_argument("written", "writing"), add_report_arguments("DEST/.dicom-transfer/<operation id>"),
             add_logging_arguments, add_deid_arguments),
            "  dicom-transfer export --dicomweb-url http://pacs:8042/dicom-web --all --output /data/export\n"
            "  dicom-transfer export --dicomweb-url URL --identifier 1.2.3/4.5.6 --output gs://b/x --layout azure\n"
            "  dicom-transfer export --dicomweb-url URL --filter-file wanted.txt --output out --dry-run"),
        Command(
            "migrate", "move instances between DICOMweb servers and PACS, verified",
            "Migrate studies, series or instances (by identifiers, a filter file, or the whole store) from a "
            "source DICOMweb server to a destination one: per series, only what the destination does not hold "
            "is retrieved (WADO-RS, as stored) and stored (batched STOW-RS), then the destination is checked. "
            "With --dimse-source the source is a PACS (C-FIND, then C-GET or C-MOVE); with --dimse-destination "
            "the destination is a PACS (C-FIND, then C-STORE in each instance's own transfer syntax).",
            (add_migrate_arguments,
             add_dimse_arguments("source", replaces="source_dicomweb_url", staging=True, destination_too=True),
             add_dry_run_argument("stored", "storing"),
             add_report_arguments("./dicom-transfer-reports/<operation id>", has_layout=False),
             add_logging_arguments, add_deid_arguments),
            "  dicom-transfer migrate --source-dicomweb-url http://old-pacs:8042/dicom-web \\\n"
            "      --dicomweb-url https://new-pacs/dicom-web --all\n"
            "  SOURCE_DICOMWEB_PASSWORD=... DICOMWEB_TOKEN=... dicom-transfer migrate \\\n"
            "      --source-dicomweb-url URL --source-username reader --dicomweb-url URL --identifier 1.2.3\n"
            "  dicom-transfer migrate --source-dicomweb-url URL --dicomweb-url URL --filter-file wanted.txt --dry-run\n"
            "  dicom-transfer migrate --dimse-source dimse://PACS@10.0.0.5:104 --dicomweb-url URL \\\n"
            "      --all --study-date 20240101-20240131\n"
            "  dicom-transfer migrate --source-dicomweb-url URL --dimse-destination dimse://NEW@10.0.0.6:104 --all"),
        Command(
            "verify", "re-check an earlier run's manifest against its destination, moving nothing",
            "Re-check every instance an earlier run's manifest says arrived: still present on the destination "
            "(a folder or object store by its layout, or a DICOMweb server by QIDO-RS), with the same size "
            "(and SHA-256 with --checksum); write the per-series reconciliation (missing and stray instances), "
            "a summary and report.html. Exit status 1 when any series is incomplete.",
            (add_verify_arguments, add_logging_arguments),
            "  dicom-transfer verify --manifest out/.dicom-transfer/RUN/manifest.jsonl --output out\n"
            "  dicom-transfer verify --manifest reports/RUN/manifest.jsonl --dicomweb-url http://pacs:8042/dicom-web"),
        Command(
            "demo", "generate sample data (with bad files) and copy it locally",
            "Generate a small sample set (24 valid instances and 6 deliberately bad files) and copy it "
            "with the DirectRunner.",
            (add_demo_arguments, add_logging_arguments),
            "  dicom-transfer demo\n  dicom-transfer demo --dir /tmp/demo"),
    )
}


def build_parser(prog: str = "dicom-transfer", version: str = "") -> argparse.ArgumentParser:
    """The whole command line (subcommands and their options)."""
    parser = argparse.ArgumentParser(
        prog=prog, allow_abbrev=False,
        description="Move DICOM instances in bulk between storage and DICOMweb, with Apache Beam.",
        epilog="Run 'dicom-transfer COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS.values():
        sub = commands.add_parser(
            command.name, help=command.summary, description=command.description, allow_abbrev=False,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog=f"examples:\n{command.examples}\n\n{BEAM_OPTIONS_NOTE}")
        for add in command.groups:
            add(sub)
    return parser


def command_parser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The sub-parser of command ``name``."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def option_owners(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """Every option string of every subcommand -> the subcommands that take it."""
    owners: dict[str, list[str]] = {}
    for name in COMMANDS:
        for action in command_parser(parser, name)._actions:
            for flag in action.option_strings:
                owners.setdefault(flag, []).append(name)
    return owners
