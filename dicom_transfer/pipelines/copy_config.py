"""The configuration of a ``copy`` run (without Beam: the launcher reads it before any pipeline)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from dicom_transfer.errors import redact
from dicom_transfer.io.files import scheme_of
from dicom_transfer.layout import Layout
from dicom_transfer.report import RunReports, absolute

if TYPE_CHECKING:
    from dicom_transfer.pipelines.deid import DeidConfig


@dataclasses.dataclass(frozen=True)
class CopyConfig:
    """Everything a copy run needs, already checked (see ``pipelines.cli``)."""

    patterns: tuple[str, ...]
    destination: str
    layout: Layout
    reports: RunReports
    filter_file: str | None = None
    overwrite: bool = False
    io_threads: int = 0  # 0: decide from where the bytes are
    processes: int = 1  # that copy files to a local folder (see configs.copy_processes)
    # the runner executes the whole pipeline in this process (the in-process DirectRunner): the files
    # found go straight to the copy instead of through a grouping that spreads them over workers
    in_one_process: bool = False
    strict: bool = False
    deid: DeidConfig | None = None
    # an earlier run's manifest (or a pattern: the newest match) whose successes are not read again
    previous_manifest: str | None = None

    @property
    def dry_run(self) -> bool:
        return self.reports.dry_run

    @property
    def threads(self) -> int:
        from dicom_transfer.transforms.concurrency import DEFAULT_THREADS

        if self.io_threads > 0:
            return self.io_threads
        return 1 if self.between_local_disks else DEFAULT_THREADS

    @property
    def between_local_disks(self) -> bool:
        return all(scheme_of(url) is None for url in (*self.patterns, self.destination))

    @property
    def run(self) -> str:
        """What the outputs of this run record as the run that wrote them."""
        return f"{self.reports.operation_id}@{self.reports.created_time}"

    @property
    def quick_check(self) -> bool:
        """Whether sources unchanged since the earlier manifest are not read again.

        Not with de-identification (an output is not its source's bytes) nor a filter file (which
        decides by the UIDs read from each file, and reports the lines that selected nothing).
        """
        return bool(self.previous_manifest) and self.deid is None and not self.filter_file

    def summary_extra(self) -> dict:
        """What the summary says of the run's source and destination."""
        return {"source": [redact(p) for p in self.patterns], "destination": absolute(redact(self.destination))}

    def skip_unchanged(self):  # -> transforms.manifest.SkipUnchanged | None
        """What counts the files an earlier run moved, unchanged since, without reading them
        (see :attr:`quick_check`)."""
        from dicom_transfer.transforms.manifest import SkipUnchanged

        if not self.quick_check or self.previous_manifest is None:
            return None
        return SkipUnchanged(self.previous_manifest, self.destination, exclude=self.reports.manifest_url)

    @property
    def streams(self) -> bool:
        """Local destination, no de-identification: each file is copied in one step."""
        return self.deid is None and scheme_of(self.destination) is None

    @property
    def deidentifies_in_one_step(self) -> bool:
        """De-identification to local disk without a filter file: each file in one step."""
        return self.deid is not None and scheme_of(self.destination) is None and not self.filter_file
