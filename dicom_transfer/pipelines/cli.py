"""The ``dicom-transfer`` command line.

Exit status: 0 = no failures; 1 = completed with failure records;
2 = invalid invocation or the run could not complete; 130 = interrupted.

Each subcommand takes only its own options (``pipelines.options``); what is
left must be Apache Beam pipeline options, checked before Beam sees them, so
that a typo, an option of another subcommand or a path expanded by the shell
is refused instead of being ignored. Beam is imported only when a pipeline
runs (``--help`` answers at once), and only Beam's options reach the
``PipelineOptions``: the product's own (URLs that may carry credentials
included) never travel to the workers' command lines.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Sequence

from dicom_transfer import __version__
from dicom_transfer.errors import redact
from dicom_transfer.pipelines.logs import setup_logging
from dicom_transfer.pipelines.options import COMMANDS, UsageError, build_parser, option_owners
from dicom_transfer.pipelines.startup import skip_unused_beam_filesystems

LOG = logging.getLogger("dicom_transfer")
EXIT_OK, EXIT_FAILURES, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130
LOCAL_RUNNERS = (None, "DirectRunner", "direct", "SwitchingDirectRunner", "BundleBasedDirectRunner")


def beam_arguments(command: str, rest: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """Check what the subcommand did not take: only Beam's own options may be left.

    Raises
    ------
    UsageError
        Naming an option of another subcommand, an unknown option (with the
        closest known one), or a stray argument (typically a wildcard that the
        shell expanded into many paths).
    """
    owners = option_owners(parser)
    for token in rest:
        flag = token.split("=", 1)[0]
        if flag in owners:
            raise UsageError(f"{command} does not take {flag} (an option of {', '.join(owners[flag])})")
    if not rest:  # nothing to check: Beam is not imported for it
        return []
    unknown = _beam_unknown(rest)
    strays = [token for token in unknown if not token.startswith("-")]
    flags = [token.split("=", 1)[0] for token in unknown if token.startswith("-")]
    if flags:
        known = [*owners, *_beam_flags()]
        hints = [f"{flag} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(flag, known, 1))
                 else flag for flag in flags]
        raise UsageError(f"unknown option(s): {', '.join(hints)}")
    if strays:
        shown = ", ".join(repr(s) for s in strays[:3]) + (f" and {len(strays) - 3} more" if len(strays) > 3 else "")
        raise UsageError(f"unexpected argument(s) {shown}: a pattern the shell expanded? Quote wildcards "
                         "(--input '/data/**.dcm') and repeat --input for several patterns")
    return list(rest)


RUNNER_OPTION_MODULES = {"DaskRunner": "apache_beam.runners.dask.dask_runner"}  # options defined with the runner
# Runners the product supplies itself, by the name users write (see pipelines/dask_runner.py).
PRODUCT_RUNNERS = {"DaskRunner": "dicom_transfer.pipelines.dask_runner.DaskRunner"}


def _beam_parser(argv: Sequence[str] = ()):
    # Beam's own parser class: its options use add_value_provider_argument. The same loop as
    # PipelineOptions.get_all_options, which does not return what it could not parse.
    import importlib

    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    for runner, module in RUNNER_OPTION_MODULES.items():
        if any(runner in argument for argument in argv):
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise UsageError(f"--runner {runner} needs {exc.name or module}: "
                                 "pip install 'dicom-transfer[dask]'") from None

    parser = _BeamArgumentParser(allow_abbrev=False)
    for options_class in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        options_class._add_argparse_args(parser)
    return parser


def _beam_unknown(argv: list[str]) -> list[str]:
    return _beam_parser(argv).parse_known_args(argv)[1]


def _beam_flags() -> list[str]:
    return [flag for action in _beam_parser()._actions for flag in action.option_strings]


def pipeline_options(beam_argv: list[str]):
    """Beam's ``PipelineOptions`` from Beam's options alone; local workers log warnings only."""
    from apache_beam.options.pipeline_options import StandardOptions

    from dicom_transfer.pipelines.beam_options import BeamOptions

    runner = BeamOptions(beam_argv).view_as(StandardOptions).runner
    if runner in PRODUCT_RUNNERS:
        beam_argv = [*beam_argv, "--runner", PRODUCT_RUNNERS[runner]]  # the last --runner wins
    if runner in LOCAL_RUNNERS and not any(a.startswith("--sdk_harness_log_level_overrides") for a in beam_argv):
        beam_argv = [*beam_argv, "--sdk_harness_log_level_overrides", json.dumps({"apache_beam": "WARNING"})]
    return BeamOptions(beam_argv), runner in LOCAL_RUNNERS


def run_copy(args: argparse.Namespace, beam_argv: list[str]) -> int:
    from dicom_transfer.pipelines.configs import check_stores, copy_config

    config = copy_config(args)
    check_stores(config.patterns, config.destination, config.reports)
    description = (f"{len(config.patterns)} pattern(s) -> {redact(config.destination)} "
                   f"(layout {config.layout.name})")
    options, local = pipeline_options(beam_argv) if beam_argv else (None, True)  # none: Beam's in-process runner
    if local and not args.detach:
        from dicom_transfer.pipelines import unchanged

        if unchanged.applies(config):  # nothing to read: no pipeline, nor Beam
            from dicom_transfer.pipelines.run import run_without_pipeline

            status = run_without_pipeline(config, description, lambda: unchanged.write_unchanged_run(config))
            if status is not None:
                return status
    if options is None:
        options, local = pipeline_options(beam_argv)
    from dicom_transfer.pipelines.configs import copy_processes, in_one_process
    from dicom_transfer.pipelines.copy import build_copy_pipeline

    config = dataclasses.replace(config, processes=copy_processes(config, args.processes, options, local),
                                 in_one_process=in_one_process(options, local))

    return execute(args, options, local, config, build_copy_pipeline, description, patterns=len(config.patterns))


def run_import(args: argparse.Namespace, beam_argv: list[str]) -> int:
    if args.dimse_destination:
        return run_dimse_import(args, beam_argv)
    if not args.dicomweb_url:
        raise UsageError("give --dicomweb-url URL or --dimse-destination dimse://AE@HOST:PORT")
    from dicom_transfer.pipelines.configs import check_stores, import_config, in_one_process
    from dicom_transfer.pipelines.import_pipeline import build_import_pipeline

    options, local = pipeline_options(beam_argv)
    config = import_config(args, local, in_one_process(options, local))
    check_stores(config.patterns, None, config.reports)
    return execute(args, options, local, config, build_import_pipeline,
                   f"{len(config.patterns)} pattern(s) -> {config.client.safe_url}", patterns=len(config.patterns))


def run_export(args: argparse.Namespace, beam_argv: list[str]) -> int:
    if args.dimse_source:
        return run_dimse_export(args, beam_argv)
    if not args.dicomweb_url:
        raise UsageError("give --dicomweb-url URL or --dimse-source dimse://AE@HOST:PORT")
    from dicom_transfer.pipelines.configs import check_stores, export_config
    from dicom_transfer.pipelines.export_pipeline import build_export_pipeline

    options, local = pipeline_options(beam_argv)
    config = export_config(args)
    check_stores([], config.destination, config.reports)
    return execute(args, options, local, config, build_export_pipeline,
                   f"{config.client.safe_url} -> {redact(config.destination)} (layout {config.layout.name})")


def run_dimse_export(args: argparse.Namespace, beam_argv: list[str]) -> int:
    from dicom_transfer.pipelines.configs import check_stores
    from dicom_transfer.pipelines.dimse import build_dimse_export_pipeline, dimse_export_config, move_receiver

    options, local = pipeline_options(beam_argv)
    config = dimse_export_config(args)
    check_stores([], config.destination, config.reports)
    with move_receiver(config):
        return execute(args, options, local, config, build_dimse_export_pipeline,
                       f"{config.settings.peer} -> {redact(config.destination)} (layout {config.layout.name})")


def run_dimse_import(args: argparse.Namespace, beam_argv: list[str]) -> int:
    from dicom_transfer.pipelines.configs import check_stores
    from dicom_transfer.pipelines.dimse import build_dimse_import_pipeline, dimse_import_config

    options, local = pipeline_options(beam_argv)
    config = dimse_import_config(args, local)
    check_stores(config.patterns, None, config.reports)
    return execute(args, options, local, config, build_dimse_import_pipeline,
                   f"{len(config.patterns)} pattern(s) -> {config.settings.peer}", patterns=len(config.patterns))


def run_migrate(args: argparse.Namespace, beam_argv: list[str]) -> int:
    if args.dimse_source:
        return run_dimse_migrate(args, beam_argv)
    if not args.source_dicomweb_url:
        raise UsageError("give --source-dicomweb-url URL or --dimse-source dimse://AE@HOST:PORT")
    from dicom_transfer.pipelines.configs import check_stores, migrate_config
    from dicom_transfer.pipelines.migrate import build_migrate_pipeline

    options, local = pipeline_options(beam_argv)
    config = migrate_config(args, local)
    check_stores([], None, config.reports)
    return execute(args, options, local, config, build_migrate_pipeline,
                   f"{config.source.safe_url} -> {config.destination_name}")


def run_dimse_migrate(args: argparse.Namespace, beam_argv: list[str]) -> int:
    from dicom_transfer.pipelines.configs import check_stores
    from dicom_transfer.pipelines.dimse_migrate import (
        build_dimse_migrate_pipeline,
        dimse_migrate_config,
        staging_receiver,
    )

    options, local = pipeline_options(beam_argv)
    config = dimse_migrate_config(args, local)
    check_stores([], None, config.reports)
    with staging_receiver(config):
        return execute(args, options, local, config, build_dimse_migrate_pipeline,
                       f"{config.settings.peer} -> {config.destination_name}")


def run_verify(args: argparse.Namespace, beam_argv: list[str]) -> int:
    from dicom_transfer.pipelines.configs import verify_config
    from dicom_transfer.pipelines.verify import build_verify_pipeline

    options, local = pipeline_options(beam_argv)
    config = verify_config(args)
    return execute(args, options, local, config, build_verify_pipeline,
                   f"{redact(config.manifest_url)} against {config.destination_name}")


def execute(args: argparse.Namespace, options, local: bool, config, build: Callable, description: str,
            patterns: int = 0) -> int:
    """Build and run a pipeline with progress, then report; return the exit status."""
    from dicom_transfer.pipelines.run import run_pipeline

    return run_pipeline(options, local, config, build, description, progress=_progress_mode(args),
                        patterns=patterns, detach=args.detach, interval=args.progress_interval)


def _progress_mode(args: argparse.Namespace) -> str:
    return "none" if args.quiet else args.progress


def run_demo(args: argparse.Namespace, beam_argv: list[str]) -> int:
    """Generate a sample set with a few bad files and copy it (the README's first command)."""
    from dicom_transfer.sample import write_sample_set

    workdir = args.dir or tempfile.mkdtemp(prefix="dicom-transfer-demo-")
    sample = write_sample_set(f"{workdir}/input", studies=3, series_per_study=2,
                              instances_per_series=4)
    print(f"Generated {len(sample.valid)} valid instances and {len(sample.bad)} bad files "
          f"in {workdir}/input")
    copy_argv = ["copy", "--input", f"{workdir}/input/**", "--output", f"{workdir}/output",
                 "--progress", args.progress, "--progress-interval", str(args.progress_interval),
                 *(["--quiet"] if args.quiet else [])]
    parser = build_parser(version=__version__)
    copy_args, rest = parser.parse_known_args(copy_argv)
    status = run_copy(copy_args, [*rest, *beam_argv])
    if status == EXIT_INVALID:
        return status
    print(f"\nThe failures above are the {len(sample.bad)} deliberately bad sample files "
          f"({', '.join(sorted(set(sample.bad.values())))}).\nOutput: {workdir}/output")
    return EXIT_OK


RUNNERS: dict[str, Callable[[argparse.Namespace, list[str]], int]] = {
    "copy": run_copy, "import": run_import, "export": run_export, "migrate": run_migrate, "verify": run_verify,
    "demo": run_demo}
assert set(RUNNERS) == set(COMMANDS)


def parse_command(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """``(options of the subcommand, Beam's options)`` of a command line; raises UsageError."""
    parser = build_parser(version=__version__)
    args, rest = parser.parse_known_args(argv)
    return args, beam_arguments(args.command, rest, parser)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(version=__version__)
    try:
        args, rest = parser.parse_known_args(argv)
    except SystemExit as done:  # --help, --version, or argparse's own usage error (already printed)
        return done.code if isinstance(done.code, int) else EXIT_INVALID
    setup_logging(verbose=args.verbose, quiet=args.quiet, level=args.log_level, log_file=args.log_file,
                  log_format=args.log_format)
    skip_unused_beam_filesystems(rest, LOCAL_RUNNERS)
    try:
        return RUNNERS[args.command](args, beam_arguments(args.command, rest, parser))
    except UsageError as exc:
        LOG.debug("usage error", exc_info=True)
        print(f"dicom-transfer {args.command}: error: {redact(str(exc))}", file=sys.stderr)
        return EXIT_INVALID


def command_line() -> None:
    """The ``dicom-transfer`` command: :func:`main`, then the process ends at once with its status.

    Once a run is over (its outputs and reports closed, Beam's workers stopped), tearing the
    interpreter down (~1,400 modules, ~0.13 s of garbage collection alone) took 0.4-0.5 s more
    after the summary was printed, ~15 % of a small run. Logging and the standard streams are
    flushed first; nothing else is left to do. An exception escaping :func:`main` ends the process
    as usual, its traceback printed.
    """
    status = main()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe or stream: nothing more to say on it
            stream.flush()
    os._exit(status)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    command_line()
