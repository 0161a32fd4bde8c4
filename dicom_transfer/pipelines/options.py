"""The product's options, as Beam ``PipelineOptions`` subclasses.

One definition serves ``--help``, the CLI, Flex Templates and programmatic
use: ``PipelineOptions(argv).view_as(CopyOptions)``.
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


def add_input_arguments(parser) -> None:
    parser.add_argument(
        "--input", dest="input", action="append", default=None, metavar="PATTERN",
        help="Files to read: a path or URL with Google wildcards ('*' within a folder, "
             "'?' one character, '**' recursively at the end, e.g. 'data/**.dcm'); "
             "a folder means everything below it. Repeatable.")
    parser.add_argument(
        "--input-list", "--input_list", dest="input_list", default=None, metavar="FILE",
        help="A file with one PATTERN per line (blank lines and # comments ignored).")
    parser.add_argument(
        "--filter-file", "--filter_file", dest="filter_file", default=None, metavar="FILE",
        help="Google filter file: lines /studies/S[/series/SE[/instances/I]]; only the "
             "instances it names are transferred, the others are counted as filtered.")


class CopyOptions(PipelineOptions):
    """Options of ``dicom-transfer copy``."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        add_input_arguments(parser)
        parser.add_argument(
            "--output", dest="output", default=None, metavar="DEST",
            help="Destination folder or URL (required).")
        parser.add_argument(
            "--layout", dest="layout", default="uid",
            help="uid (default): STUDY/SERIES/SOP.dcm; azure: <operation id>/results/STUDY/"
                 "SERIES/SOP.dcm; or a template of DICOM keywords such as "
                 "'{PatientID}/{StudyDate}/{Modality}/{SOPInstanceUID}.dcm'.")
        add_report_arguments(parser)
        parser.add_argument(
            "--overwrite", dest="overwrite", action="store_true", default=False,
            help="Replace outputs that exist with different content (default: report them).")
        parser.add_argument(
            "--dry-run", dest="transfer_dry_run", action="store_true", default=False,
            help="Expand and validate, report what would be written, write no instance.")
