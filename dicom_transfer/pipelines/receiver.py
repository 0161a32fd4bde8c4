"""The storage SCP that C-MOVE sends to: it validates, places and journals what it receives.

On the DirectRunner, ``export --move-destination AE --move-listen HOST:PORT`` runs
one in the launching process for the duration of the run. On a distributed runner
workers have changing addresses, so the receiver is a fixed service outside them
(registered in the PACS under the move destination's AE title), started with::

    python -m dicom_transfer.pipelines.receiver --ae-title AE --listen 0.0.0.0:11112 \\
        --output gs://bucket/export --journal gs://bucket/export/.dicom-transfer/received

It writes into the destination by the same layout and rules as the pipeline, and
records each instance in the journal; the pipeline's workers reconcile each
C-MOVE from that journal when the PACS answers it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading

from dicom_transfer.dimse import check_ae_title, parse_listen_address
from dicom_transfer.elements import Outcome
from dicom_transfer.errors import ErrorRecord
from dicom_transfer.io.destination import Destination
from dicom_transfer.io.dimse import start_storage_scp
from dicom_transfer.io.dimse_exchange import Arrival
from dicom_transfer.layout import Layout
from dicom_transfer.transforms.dimse_source import receive_file
from dicom_transfer.transforms.place import write_journal_entry
from dicom_transfer.vocabulary import Stage

LOG = logging.getLogger(__name__)


def journal_of(destination: str) -> str:
    """The default journal location of a destination."""
    return f"{destination.rstrip('/')}/.dicom-transfer/received"


class MoveReceiver:
    """A storage SCP writing into ``destination_url`` by ``layout``, journaling in ``journal``.

    Example::

        receiver = MoveReceiver("EXPORT", "0.0.0.0", 11112, "/data/export", Layout.parse("uid")).start()
        ...
        receiver.stop()
    """

    def __init__(self, ae_title: str, host: str, port: int, destination_url: str, layout: Layout,
                 journal: str | None = None, overwrite: bool = False, dry_run: bool = False) -> None:
        self.ae_title = ae_title
        self.address = (host, port)
        self.destination_url = destination_url
        self.layout = layout
        self.journal = journal or journal_of(destination_url)
        self.overwrite = overwrite
        self.dry_run = dry_run
        self.server = None
        self.received = 0
        self.lock = threading.Lock()

    def start(self) -> MoveReceiver:
        self.destination = Destination(self.destination_url)
        self.server = start_storage_scp(self.ae_title, *self.address, self._on_store)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def _on_store(self, arrival: Arrival) -> int:
        path = arrival.dataset_path
        result = receive_file(path, self.destination, self.layout, None, None, overwrite=self.overwrite,
                              dry_run=self.dry_run, sop=arrival.sop_instance)
        with contextlib.suppress(OSError):
            os.unlink(path)
        named = result.source if isinstance(result, Outcome) else result.identifier
        parts = named.split("/")
        if len(parts) == 3:
            study, series, sop = parts
            write_journal_entry(self.journal, study, series, sop, result)
        if isinstance(result, ErrorRecord):
            LOG.warning("received %s: %s", named, result.error)
            return 0xA700 if result.stage == Stage.WRITE else 0xC000
        with self.lock:
            self.received += 1
        return 0x0000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dicom_transfer.pipelines.receiver",
                                     description="Storage SCP for C-MOVE: validate, place and journal.")
    parser.add_argument("--ae-title", required=True, help="The move destination's AE title.")
    parser.add_argument("--listen", required=True, metavar="HOST:PORT")
    parser.add_argument("--output", required=True, metavar="DEST")
    parser.add_argument("--layout", default="uid")
    parser.add_argument("--journal", default=None, help="Default: DEST/.dicom-transfer/received.")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    try:
        receiver = MoveReceiver(check_ae_title(args.ae_title), *parse_listen_address(args.listen), args.output,
                                Layout.parse(args.layout), args.journal, args.overwrite).start()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    receiver.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
