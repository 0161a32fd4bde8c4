"""Run one assembled pipeline: progress while it runs, the summary after, a clean stop on Ctrl-C."""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

from dicom_transfer.errors import error_kind, redact
from dicom_transfer.io.processes import close_all as close_worker_processes
from dicom_transfer.pipelines.local_worker import WITHOUT_UNUSED_MODULES
from dicom_transfer.pipelines.logs import silence_libraries, unsilence_libraries
from dicom_transfer.pipelines.startup import unused_modules_refused
from dicom_transfer.progress import ENV, ProgressDisplay, ProgressListener, Totals
from dicom_transfer.report import CANCELED, COMPLETED, FAILED, build_summary, human_summary, read_json, write_text

LOG = logging.getLogger("dicom_transfer")
EXIT_OK, EXIT_FAILURES, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130


# Options Beam encodes for its workers under a name they cannot parse back (flags whose negative
# form is the flag): each ``multi_processing`` worker logged "Discarding unparseable args" for them.
UNREADABLE_OPTIONS = ("pipeline_type_check", "direct_runner_use_stacked_bundle")
LOOPBACK = ("localhost", "127.0.0.1", "::1")


def loopback_bypasses_proxies() -> None:
    """Keep gRPC on this machine out of any proxy: ``multi_processing`` workers reach their
    launcher over gRPC at ``localhost``, and gRPC sends even that through ``https_proxy`` or
    ``http_proxy`` unless ``no_grpc_proxy`` (or, when that is unset, ``no_proxy``) names it; behind
    a proxy that does not answer, they waited for ever. Only gRPC reads ``no_grpc_proxy``."""
    # gRPC reads these names in lower case only
    current = os.environ.get("no_grpc_proxy", os.environ.get("no_proxy", os.environ.get("NO_PROXY", "")))  # noqa: SIM112
    hosts = [host.strip() for host in current.split(",") if host.strip()]
    os.environ["no_grpc_proxy"] = ",".join(  # noqa: SIM112
        [*hosts, *(host for host in LOOPBACK if host not in hosts)])


def local_runner(options):
    """The engine of a local run: Beam's FnApiRunner, the batch engine of its DirectRunner.

    Beam's DirectRunner first tries its Prism runner, a Go binary that it downloads from GitHub
    on first use and runs the pipeline on instead. A local run must not depend on the network:
    behind a proxy that does not answer, that download waits for ever (a 1-file copy hung, 0
    written); without a network it fails after costing start-up; with one, the run would go to
    an engine the product is not tested on. So a local run starts the FnApiRunner itself, as the
    DirectRunner does when Prism is not chosen (``--direct_running_mode`` and
    ``--direct_num_workers`` apply as before). ``None`` (Beam decides) when Beam's other local
    engine, ``BundleBasedDirectRunner``, was asked for by name.
    """
    from apache_beam.options.pipeline_options import StandardOptions

    loopback_bypasses_proxies()
    if options.view_as(StandardOptions).runner == "BundleBasedDirectRunner":
        return None
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    all_options = options.get_all_options()
    for name in UNREADABLE_OPTIONS:  # the workers' defaults apply (they type-check nothing themselves)
        all_options.pop(name, None)
    encoded = JobServiceHandle.encode_pipeline_options(all_options)
    provision = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    worker = LOCAL_WORKER + (f" {WITHOUT_UNUSED_MODULES}" if unused_modules_refused() else "")
    return _runner_starting_workers(worker)(provision_info=provision)


BEAM_WORKER = "-m apache_beam.runners.worker.sdk_worker_main"
LOCAL_WORKER = "-m dicom_transfer.pipelines.local_worker"


def _runner_starting_workers(worker: str):
    """The FnApiRunner, its ``multi_processing`` workers started as ``python {worker}``
    (:mod:`~dicom_transfer.pipelines.local_worker`): they leave Ctrl-C and SIGTERM to their
    launcher and, ``--without-unused-modules``, skip the modules it refused (~1 s sooner each)."""
    from apache_beam.portability import python_urns
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    class LeanWorkersRunner(fn_runner.FnApiRunner):
        def run_via_runner_api(self, pipeline_proto, options):
            for environment in pipeline_proto.components.environments.values():
                command = environment.payload.decode()  # this environment's payload: the command
                if environment.urn == python_urns.SUBPROCESS_SDK and command.endswith(BEAM_WORKER):
                    # exec: the worker is the process Beam waits for, not a shell that dies on Ctrl-C
                    environment.payload = ("exec " + command[:-len(BEAM_WORKER)] + worker).encode()
            return super().run_via_runner_api(pipeline_proto, options)

    return LeanWorkersRunner


def run_pipeline(options, local: bool, config, build: Callable, description: str, *, progress: str = "auto",
                 patterns: int = 0, detach: bool = False, interval: float = 10.0) -> int:
    """Build the pipeline of ``config`` with ``build``, run it, report; return the exit status.

    ``progress`` is ``auto``/``bar``/``lines``/``none``; it is shown for local
    runners only (a distributed runner's workers log their own progress).
    """
    reports = config.reports
    kind = reports.operation_type
    LOG.info("%s %s: %s", kind, reports.operation_id, description, extra={"event": "start"})
    display = None
    if local and not detach and progress != "none":
        display = ProgressDisplay(ProgressListener().start(), progress, patterns, interval=interval)

    def interrupted() -> int:
        close_worker_processes()  # each finishes the files in hand (the last ones may not be counted)
        totals = display.stop() if display else Totals()
        return _interrupted(config, totals, "" if local else _still_running_remotely(options))

    try:
        with _progress_environment(display), _interruptible():
            import apache_beam as beam

            pipeline = beam.Pipeline(runner=local_runner(options) if local else None, options=options)
            build(pipeline, config)
            result = pipeline.run()
            if detach:
                job = getattr(result, "job_id", lambda: None)()
                print(f"{kind} {reports.operation_id}: submitted{f' as job {job}' if job else ''}; "
                      f"the summary will be written to {redact(reports.summary_url)}")
                return EXIT_OK
            result.wait_until_finish()
        summary = read_json(reports.summary_url)
    except KeyboardInterrupt:
        return interrupted()
    except Exception as exc:  # the run itself broke: say why, record it, exit 2
        if _caused_by_interrupt(exc):  # Beam re-raises it wrapped, naming the step it interrupted
            return interrupted()
        message = redact(f"{type(exc).__name__}: {exc}")
        LOG.error("%s %s failed: %s", kind, reports.operation_id, message)
        LOG.debug("traceback", exc_info=True)
        _write_summary_after_stop(config, FAILED, {"error": message}, Totals())
        return EXIT_INVALID
    finally:
        close_worker_processes()
        if display:
            display.stop()
            display.listener.stop()
    print_result(summary, reports)
    return EXIT_OK if summary["status"] == COMPLETED else EXIT_FAILURES


def run_without_pipeline(config, description: str, write: Callable[[], dict | None]) -> int | None:
    """Write a run's reports with ``write`` (which returns the summary, or None if the run needs
    its pipeline after all); report as :func:`run_pipeline` does; the exit status, or None."""
    reports = config.reports
    try:
        with _interruptible():
            summary = write()
    except KeyboardInterrupt:
        return _interrupted(config, Totals())
    except Exception as exc:  # the reports could not be written: as when a pipeline breaks
        message = redact(f"{type(exc).__name__}: {exc}")
        LOG.error("%s %s failed: %s", reports.operation_type, reports.operation_id, message)
        LOG.debug("traceback", exc_info=True)
        _write_summary_after_stop(config, FAILED, {"error": message}, Totals())
        return EXIT_INVALID
    if summary is None:
        return None
    LOG.info("%s %s: %s", reports.operation_type, reports.operation_id, description, extra={"event": "start"})
    print_result(summary, reports)
    return EXIT_OK if summary["status"] == COMPLETED else EXIT_FAILURES


@contextlib.contextmanager
def _progress_environment(display: ProgressDisplay | None) -> Iterator[None]:
    """Point the workers (this process's and its children) at the display's listener."""
    if display is None:
        yield
        return
    previous = os.environ.get(ENV)
    os.environ[ENV] = display.listener.address
    display.start()
    try:
        if display.bar is not None:
            from tqdm.contrib.logging import logging_redirect_tqdm

            with logging_redirect_tqdm(loggers=[logging.getLogger("dicom_transfer"), logging.getLogger()]):
                yield
        else:
            yield
    finally:
        if previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = previous


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C and SIGTERM (a scheduler stopping the job) stop the run as KeyboardInterrupt, with
    Beam's own error lines about the interrupted step silenced: the user asked for it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame) -> None:  # noqa: ARG001 - a signal handler's signature
        silence_libraries()
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        unsilence_libraries()


def _caused_by_interrupt(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, KeyboardInterrupt) or str(exc).startswith("KeyboardInterrupt"):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def print_result(summary: dict, reports) -> None:
    """The human summary (stdout, or stderr when the summary JSON goes to stdout) and the first errors."""
    human = sys.stderr if reports.summary_to_stdout else sys.stdout
    _copy_summary(summary, reports)
    print(human_summary(summary, reports.summary_url, reports.dry_run), file=human)
    _print_first_errors(reports.errors_url, summary["counter"].get("failure", 0), human)
    LOG.debug("result", extra={"event": "result", "summary": summary})


def _print_first_errors(errors_url: str, failures: int, out, limit: int = 10) -> None:
    """``failures: 12 × truncated, 3 × uid``, then the first ``limit`` errors (errors.log is streamed)."""
    from dicom_transfer.io.files import open_url

    if not failures:
        return
    kinds: collections.Counter[str] = collections.Counter()
    first: list[str] = []
    try:
        with open_url(errors_url) as lines:
            for line in lines:
                record = json.loads(line)
                kinds[error_kind(record)] += 1
                if len(first) < limit:
                    first.append(f"    {record['Identifier']}: {record['Error']}")
    except (OSError, ValueError) as exc:
        print(f"    (cannot read {redact(errors_url)}: {exc})", file=out)
        return
    print("  failures: " + ", ".join(f"{n:,} × {kind}" for kind, n in kinds.most_common()), file=out)
    print(f"  first {len(first)} of {failures:,} errors:", file=out)
    print("\n".join(first), file=out)


def _still_running_remotely(options) -> str:
    """What a Ctrl-C in the launcher leaves running on a remote runner.

    A Dask scheduler drops the tasks of a client that left, except those already running: each a
    share of the files, which finishes (its files complete). A Dataflow job goes on until it is
    cancelled there.
    """
    from apache_beam.options.pipeline_options import StandardOptions

    runner = str(options.view_as(StandardOptions).runner or "")
    if runner.endswith("DaskRunner"):
        return (" The Dask cluster starts no more of this run's tasks; those already running finish their "
                "share first, so files may still appear for a while.")
    return f" The job may still be running on the {runner}: cancel it there."


def _interrupted(config, totals: Totals, remote: str = "") -> int:
    reports = config.reports
    counted = (f"{totals.success:,} {'would be ' if reports.dry_run else ''}transferred, {totals.unchanged:,} "
               f"unchanged and {totals.failure:,} failed")
    print(f"\n{reports.operation_type} {reports.operation_id}: interrupted; counted so far: {counted} (the last "
          "instances written may not be counted yet). What was written is complete and stays; run the same "
          f"command again to finish: it skips what is already there.{remote}", file=sys.stderr)
    _write_summary_after_stop(config, CANCELED, {"error": "interrupted by the user"}, totals)
    return EXIT_INTERRUPTED


def _write_summary_after_stop(config, status: str, extra: dict, totals: Totals) -> None:
    """The summary of a run that did not finish: what is known, and no link to an unwritten errors.log."""
    reports = config.reports
    counter = {"success": totals.success, "failure": totals.failure, "unchanged": totals.unchanged,
               "filtered": totals.filtered, "bytesWritten": totals.bytes}
    summary = build_summary(
        operation_id=reports.operation_id, operation_type=reports.operation_type,
        created_time=reports.created_time, counter=counter, error_href=None, status=status,
        extra={**extra, "partial": True})
    try:
        write_text(reports.summary_url, json.dumps(summary, indent=2) + "\n")
    except Exception as exc:  # noqa: BLE001 - best effort, the run already stopped
        LOG.error("cannot write the summary %s either: %s", redact(reports.summary_url), redact(str(exc)))
    _copy_summary(summary, reports)
    LOG.debug("result", extra={"event": "result", "summary": summary})


def _copy_summary(summary: dict, reports) -> None:
    """The summary JSON to standard output or to the device or pipe the user named."""
    text = json.dumps(summary, indent=2) + "\n"
    if reports.summary_to_stdout:
        sys.stdout.write(text)
        sys.stdout.flush()
    elif reports.summary_copy:
        try:
            write_text(reports.summary_copy, text)
        except OSError as exc:
            LOG.error("cannot write the summary to %s: %s", reports.summary_copy, exc)
