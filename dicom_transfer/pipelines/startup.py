"""Start-up of a local run: what Beam need not import when nothing leaves this machine.

``import apache_beam`` makes ``apache_beam.io.filesystems`` import every cloud filesystem whose SDK
is installed (GCS, S3, Azure Blob, HDFS): ~0.8 s of a local run's start-up with the ``[gcp]``,
Azure and S3 SDKs present, for filesystems a local run never uses — the product reads and writes
through fsspec, and Beam uses its own filesystems only for staging and temporary files. So on a
local runner whose Beam options name no remote location, those modules are refused on import,
which Beam treats as a missing extra and skips. Never on Dataflow or any other remote runner,
where staging goes through them.

The same holds for SDKs ``import apache_beam`` loads that a local run never calls: the Dataflow
API client (~0.2 s; only ``DataflowRunner`` uses it, while submitting), and those of IO
connectors the product does not use — BigQuery (~0.1 s), the Pub/Sub client (~0.06 s) and
MongoDB's ``pymongo`` (~0.05 s); and Google's ``apitools``, whose HTTP error type Beam's retry
helpers import, with google-api-core's, to recognise Google API errors (~0.2 s with the
``oauth2client``, ``pyasn1`` and certificate schemas it loads; their only callers are Beam's GCS,
BigQuery and Dataflow clients and its stager, none of which a local run uses). Beam guards each of
these imports and goes on without them (its DirectRunner still imports ``apache_beam.io.gcp.pubsub``,
which works without the Pub/Sub client).
"""

from __future__ import annotations

import importlib.abc
import logging
import sys
from collections.abc import Sequence

from dicom_transfer.io.files import scheme_of

CLOUD_FILESYSTEMS = ("apache_beam.io.gcp.gcsfilesystem", "apache_beam.io.aws.s3filesystem",
                     "apache_beam.io.azure.blobstoragefilesystem", "apache_beam.io.hadoopfilesystem")
UNUSED_SDKS = ("apache_beam.io.gcp.bigquery", "google.cloud.pubsub", "pymongo", "bson", "google.cloud.dataflow",
               "apitools")
_SKIPPED = ("HadoopFileSystem", "GCSFileSystem", "S3FileSystem", "BlobStorageFileSystem")


class _Refuse(importlib.abc.MetaPathFinder):
    """Makes the import of the named modules fail as if their extra were not installed."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = frozenset(names)

    def find_spec(self, name, path, target=None):  # noqa: ARG002 - the MetaPathFinder interface
        if name in self.names:
            raise ImportError(f"{name}: not needed by a local run", name=name)
        return None


class _QuietSkips(logging.Filter):
    """Drops Beam's warnings about the modules refused here ("Failed to import GCSFileSystem; ...",
    "Could not find a compatible bson package.")."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not ((message.startswith("Failed to import") and any(n in message for n in _SKIPPED))
                    or message.startswith("Could not find a compatible bson"))


def option_value(argv: Sequence[str], flag: str) -> str | None:
    """The value of ``flag`` (``--flag value`` or ``--flag=value``; the last one wins)."""
    value = None
    for index, argument in enumerate(argv):
        if argument == flag and index + 1 < len(argv):
            value = argv[index + 1]
        elif argument.startswith(flag + "="):
            value = argument.split("=", 1)[1]
    return value


def needs_beam_filesystems(beam_argv: Sequence[str], local_runners: Sequence[str | None]) -> bool:
    """Whether Beam itself may use a remote filesystem: a remote runner (staging), or a Beam
    option naming a remote location (``--temp_location gs://...``)."""
    if option_value(beam_argv, "--runner") not in local_runners:
        return True
    return any(scheme_of(argument.split("=", 1)[-1]) for argument in beam_argv)


def skip_unused_beam_filesystems(beam_argv: Sequence[str], local_runners: Sequence[str | None]) -> bool:
    """Refuse Beam's cloud filesystems and unused connectors' SDKs for this process unless
    :func:`needs_beam_filesystems`; True if done. Too late once Beam is imported (tests in-process, embedding)."""
    if "apache_beam" in sys.modules or needs_beam_filesystems(beam_argv, local_runners):
        return False
    refuse_unused_modules()
    return True


def refuse_unused_modules() -> None:
    """Refuse Beam's cloud filesystems and the unused SDKs in this process, from now on (Beam's
    warnings about them dropped): in a local run's launcher and in its worker processes."""
    sys.meta_path.insert(0, _Refuse(CLOUD_FILESYSTEMS + UNUSED_SDKS))
    for name in ("apache_beam.io.filesystems", "apache_beam.io.mongodbio"):
        logging.getLogger(name).addFilter(_QuietSkips())


def unused_modules_refused() -> bool:
    """Whether :func:`refuse_unused_modules` applies in this process."""
    return any(isinstance(finder, _Refuse) for finder in sys.meta_path)
