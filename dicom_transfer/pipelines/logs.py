"""Logging of the command line: its own handlers, whatever was imported first.

Importing Beam without its ``[gcp]`` extra logs a warning through the root
logger, which makes ``logging.basicConfig`` configure the root logger with
Python's default format at level WARNING; a later ``basicConfig`` then does
nothing, and every INFO line of this product (progress included) is lost.
So the product's logger gets its own handler and does not propagate, the root
logger is configured with ``force=True``, and the CLI configures all this
before Beam is imported (lazily, when a pipeline runs).
"""

from __future__ import annotations

import json
import logging
import sys

from dicom_transfer.errors import WorkerDied, redact

PRODUCT = "dicom_transfer"
NOISY = ("apache_beam", "azure", "botocore", "aiobotocore", "s3fs", "gcsfs", "fsspec", "urllib3", "google")
_IMPORT_NOISE = ("apitools not found",)  # Beam's import-time warning without its [gcp] extra
TEXT_FORMAT = "%(asctime)s %(levelname)s %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's ``event`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in ("event", "totals", "summary"):
            if hasattr(record, field):
                document[field] = getattr(record, field)
        if record.exc_info:
            document["traceback"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False, default=str)


_LIBRARIES_SILENCED: list[bool] = []


def silence_libraries() -> None:
    """From now on only the product's own lines are shown (after Ctrl-C: the runner's errors about
    the step it interrupted say nothing the user does not know)."""
    _LIBRARIES_SILENCED.append(True)


def unsilence_libraries() -> None:
    _LIBRARIES_SILENCED.clear()


def _worker_died(record: logging.LogRecord) -> bool:
    """The runner's error, with its traceback, about a step whose worker process died: the
    product says it in one line (``pipelines.run``)."""
    return isinstance(record.exc_info, tuple) and isinstance(record.exc_info[1], WorkerDied)


class RedactingFilter(logging.Filter):
    """Last line of defence: no credential in any line, whoever logged it; drops import noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(PRODUCT) and (_LIBRARIES_SILENCED or _worker_died(record)):
            return False
        message = record.getMessage()
        if record.name == "root" and message.startswith(_IMPORT_NOISE):
            return False
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def setup_logging(*, verbose: int = 0, quiet: bool = False, level: str | None = None,
                  log_file: str | None = None, log_format: str = "text") -> None:
    """Configure the product's and the root logger's handlers (stderr, and ``log_file``)."""
    product_level = (level.upper() if level else
                     "WARNING" if quiet else "DEBUG" if verbose else "INFO")
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(RedactingFilter())
    product = logging.getLogger(PRODUCT)
    for old in list(product.handlers):
        product.removeHandler(old)
    for handler in handlers:
        product.addHandler(handler)
    product.setLevel(product_level)
    product.propagate = False
    logging.basicConfig(level=logging.WARNING, handlers=handlers, force=True)
    libraries = logging.DEBUG if verbose >= 2 else logging.WARNING  # their INFO lines are per request
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(libraries)
    logging.getLogger("pydicom").setLevel(logging.ERROR)  # what matters reaches errors.log as a record
    logging.getLogger("azure.identity").setLevel(logging.ERROR)  # its failures reach the user as ours
