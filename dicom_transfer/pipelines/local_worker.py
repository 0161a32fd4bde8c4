"""A worker process of a local ``multi_processing`` run: Beam's SDK worker, which leaves Ctrl-C
and SIGTERM to its launcher, started without the modules its launcher refused (see
:mod:`~dicom_transfer.pipelines.startup`).

Beam starts ``python -m apache_beam.runners.worker.sdk_worker_main`` for each worker, which imports
every cloud filesystem and connector SDK that is installed: ~1.7 s per worker here, ~0.75 s
without them. :func:`~dicom_transfer.pipelines.run.local_runner` starts this module instead, with
``--without-unused-modules`` when its launcher refused them, so that the workers skip them too.
"""

from __future__ import annotations

import logging
import signal
import sys

from dicom_transfer.pipelines.startup import refuse_unused_modules

WITHOUT_UNUSED_MODULES = "--without-unused-modules"  # the launcher refused them: refuse them too


class _NoSessionWarning(logging.Filter):
    """Drops "No semi_persistent_directory found": a local worker has no staged main session, by
    design. Run as ``__main__``, Beam's worker logs it under that name, which the launcher's level
    overrides keep quiet; imported from here, under its module's name."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No semi_persistent_directory")


def main() -> None:
    # Ctrl-C in a terminal reaches every process of its group, and a scheduler's SIGTERM often does
    # (systemd, by default): the launcher stops the run and says what was written; a worker ends
    # when its launcher's connection closes. Killed by the signal, each worker printed a traceback
    # and the launcher "Worker subprocess exited with return code -2" (-15) per worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if WITHOUT_UNUSED_MODULES in sys.argv[1:]:
        refuse_unused_modules()
    logging.getLogger("apache_beam.runners.worker.sdk_worker_main").addFilter(_NoSessionWarning())
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main(sys.argv)


if __name__ == "__main__":
    main()
