"""What a folder or object store holds for a series, asked for the reconciliation of a run."""

from __future__ import annotations

import logging
import os
import posixpath
from collections.abc import Iterable, Iterator

from dicom_transfer import manifest
from dicom_transfer.errors import IO_ERRORS, error_text, redact
from dicom_transfer.io.destination import Destination
from dicom_transfer.layout import Layout
from dicom_transfer.series_answers import HeldFingerprint, present_if_exact

LOG = logging.getLogger(__name__)


def listed_sizes(destination: Destination, directory: str) -> Iterator[tuple[str, int]]:
    """``(relative path, size)`` of the files directly in ``directory`` of ``destination``: one
    ``scandir`` on local disk, the store's listing otherwise."""
    for name, size in sizes_in(destination, directory).items():
        yield (f"{directory}/{name}" if directory else name), size


def sizes_in(destination: Destination, directory: str) -> dict[str, int]:
    """``{file name: size}`` of the files directly in ``directory`` of ``destination`` (nothing
    if there is no such directory): one ``scandir`` on local disk (a ``stat`` per file), the
    store's listing otherwise."""
    if not destination.local:
        return {posixpath.basename(relative): existing.size for relative, existing in destination.listing(directory)}
    try:
        with os.scandir(destination.path_of(directory) if directory else destination.root) as entries:
            return {entry.name: entry.stat().st_size for entry in entries if entry.is_file(follow_symlinks=False)}
    except (FileNotFoundError, NotADirectoryError):
        return {}


def local_size(path: str) -> int | None:
    """The size of the local file ``path`` (one ``stat``), or None if there is none."""
    try:
        return os.stat(path).st_size
    except OSError:
        return None


class LayoutCheck:
    """Asks a folder or object store what it holds for a series: the listing of the directories
    the manifest lines point at (one listing each); with a per-series layout (``uid``,
    ``azure``) the series directory itself, so that stray instances are found too."""

    def __init__(self, destination_url: str, layout: Layout) -> None:
        self.destination_url = destination_url.rstrip("/")
        self.layout = layout
        self.per_series = layout.name in ("uid", "azure")
        self.destination: Destination | None = None  # made by the first question, on the worker

    def __getstate__(self) -> dict:
        return {"destination_url": self.destination_url, "layout": self.layout}

    def __setstate__(self, state: dict) -> None:
        LayoutCheck.__init__(self, state["destination_url"], state["layout"])

    def present(self, study: str, series: str, lines: list[dict]) -> dict[str, int | None]:
        if self.destination is None:
            self.destination = Destination(self.destination_url)
        directories: dict[str, dict[str, str]] = {}  # directory -> file name -> SOP UID
        base = redact(self.destination_url) + "/"  # as the lines name their outputs
        for line in lines:
            url, sop = line.get("destination") or "", line.get("SOPInstanceUID")
            if sop and url.startswith(base):
                directory, name = _split(url[len(base):])
                names = directories.get(directory)
                if names is None:
                    names = directories[directory] = {}
                names[name] = sop
        if self.per_series and not directories:  # no instance of it arrived: its folder by the layout
            directory = posixpath.dirname(self.layout.relative_path(
                {"StudyInstanceUID": study, "SeriesInstanceUID": series, "SOPInstanceUID": "x"}))
            directories.setdefault(directory, {})
        found: dict[str, int | None] = {}
        for directory, names in directories.items():
            for name, size in sizes_in(self.destination, directory).items():
                sop = names.get(name)
                if sop is not None:
                    found[sop] = size
                elif self.per_series and name.endswith(".dcm") and not name.startswith("."):
                    found[name[:-len(".dcm")]] = size
        return found


def _split(relative: str) -> tuple[str, str]:
    """``posixpath.split`` of a relative path, without its general cases (a third of the time)."""
    directory, _, name = relative.rpartition("/")
    if directory.endswith("/"):
        return posixpath.split(relative)
    return directory, name


def ask(check, study: str, series: str, lines: list[dict]) -> dict[str, int | None] | None:
    """What ``check`` says the destination holds of a series (SOP Instance UID -> size or None),
    or None if it did not answer (logged)."""
    try:
        return check.present(study, series, lines)
    except IO_ERRORS as exc:  # a store's or a DICOMweb server's failure (DicomwebError) alike
        LOG.warning("cannot ask the destination about series %s/%s: %s", study, series, error_text(exc))
        return None


def reconcile_with(check, study: str, series: str, lines: list[dict],
                   present: dict[str, int | None] | None = None,
                   earlier: Iterable[HeldFingerprint] = ()) -> manifest.SeriesRow:
    """The reconciliation row of one series' manifest ``lines``, asking ``check`` (a
    :class:`LayoutCheck` or a target check; None: the counts only) what the destination holds,
    unless its answer is given (``present``), or an answer asked ``earlier`` in the run (by the
    store step) names exactly the instances the lines expect there (see
    :mod:`~dicom_transfer.series_answers`). A destination that does not answer leaves every
    instance that should be there missing: not proven complete."""
    if check is not None and present is None:
        present = present_if_exact(lines, earlier)
    if check is not None and present is None:
        present = ask(check, study, series, lines)
    row = manifest.reconcile_series(study, series, lines, present, per_series=getattr(check, "per_series", False))
    if present is None and check is not None:
        row.missing = sorted(line["SOPInstanceUID"] for line in lines
                             if line.get("outcome") in (manifest.SUCCESS, manifest.UNCHANGED))
    return row
