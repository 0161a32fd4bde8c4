"""The ``verify`` pipeline: re-check an earlier run's manifest against its destination, moving nothing."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

import apache_beam as beam

from dicom_transfer import manifest
from dicom_transfer.elements import OUTCOMES, Outcome
from dicom_transfer.errors import FAILURES, IO_ERRORS, ErrorRecord, error_text, redact
from dicom_transfer.io.checksums import sha256_of_url
from dicom_transfer.io.dicomweb import DicomwebClient, DicomwebError
from dicom_transfer.io.holdings import LayoutCheck
from dicom_transfer.io.manifests import read_manifest_lines
from dicom_transfer.layout import Layout
from dicom_transfer.report import RunReports, absolute
from dicom_transfer.transforms import WriteReports
from dicom_transfer.transforms.dofn import DoFn
from dicom_transfer.transforms.manifest import DicomwebCheck


@dataclasses.dataclass(frozen=True)
class VerifyConfig:
    """What to verify (a manifest) and where its instances should be (a layout or a DICOMweb store)."""

    manifest_url: str
    reports: RunReports
    destination: str | None = None
    layout: Layout | None = None
    client: DicomwebClient | None = None
    checksum: bool = False

    @property
    def check(self) -> LayoutCheck | DicomwebCheck:
        if self.client is not None:
            return DicomwebCheck(self.client)
        assert self.destination is not None and self.layout is not None
        return LayoutCheck(self.destination, self.layout)

    @property
    def destination_name(self) -> str:
        return self.client.safe_url if self.client is not None else absolute(redact(self.destination or ""))


class _VerifySeriesFn(DoFn):
    """One series of the manifest: the destination is asked once, then each line is judged."""

    def __init__(self, check, checksum: bool) -> None:
        self.check = check
        self.checksum = checksum

    def process(self, element: tuple[tuple[str, str] | None, Iterable[dict]]) -> Iterator:
        key, grouped = element
        lines = list(grouped)
        present: dict[str, int | None] | None = None
        problem = ""
        if key is not None:
            try:
                present = self.check.present(*key, lines)
            except (*IO_ERRORS, DicomwebError) as exc:
                problem = f"cannot ask the destination: {error_text(exc)}"
        for line in lines:
            yield self._judge(line, present, problem)

    def _judge(self, line: dict, present: dict[str, int | None] | None, problem: str) -> beam.pvalue.TaggedOutput:
        uids = (line.get("StudyInstanceUID", ""), line.get("SeriesInstanceUID", ""), line.get("SOPInstanceUID", ""))
        kind = str(line.get("outcome"))
        if kind == manifest.FAILURE:
            return _failure(line, f"failed in the verified run: {line.get('error')}", line.get("stage") or "verify")
        outcome = Outcome(kind, line.get("size") or 0, line.get("source", ""), line.get("destination", ""), *uids,
                          tuple((line.get("checksum") or {}).items()), line.get("sourceVersion", ""))
        if kind == manifest.FILTERED:
            return beam.pvalue.TaggedOutput(OUTCOMES, outcome)
        sop, where = uids[2], line.get("destination") or line.get("source")
        if present is None:
            return _failure(line, problem or "names no series", "verify")
        if sop not in present:
            return _failure(line, f"missing on the destination: {where}", "verify")
        if present[sop] is not None and line.get("size") is not None and present[sop] != line["size"]:
            return _failure(line, f"{where} holds {present[sop]} bytes instead of {line['size']}", "verify")
        expected = (line.get("checksum") or {}).get("sha256")
        if self.checksum and expected and line.get("destination") and "/studies/" not in line["destination"]:
            try:
                actual = sha256_of_url(line["destination"])
            except IO_ERRORS as exc:
                return _failure(line, f"cannot read {where}: {error_text(exc)}", "verify")
            if actual != expected:
                return _failure(line, f"{where} holds other bytes (SHA-256 {actual} instead of {expected})", "verify")
        return beam.pvalue.TaggedOutput(OUTCOMES, outcome._replace(kind=manifest.SUCCESS))


def _failure(line: dict, message: str, stage: str) -> beam.pvalue.TaggedOutput:
    uids = tuple(line.get(name, "") for name in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"))
    record = ErrorRecord.create(line.get("source") or "/".join(uids), message, stage,
                                uids=uids if all(uids) else ())
    return beam.pvalue.TaggedOutput(FAILURES, record)


def build_verify_pipeline(pipeline: beam.Pipeline, config: VerifyConfig) -> beam.PCollection:
    """Add the verify stages to ``pipeline``; return the PCollection of the summary URL."""
    judged = (
        pipeline
        | "ManifestUrl" >> beam.Create([config.manifest_url])
        | "ReadManifest" >> beam.FlatMap(read_manifest_lines)
        | "BySeries" >> beam.Map(lambda line: (manifest.series_key(line), line))
        | "GroupBySeries" >> beam.GroupByKey()
        | "VerifySeries" >> beam.ParDo(_VerifySeriesFn(config.check, config.checksum)).with_outputs(
            FAILURES, OUTCOMES)
    )
    no_patterns = pipeline | "NoPatterns" >> beam.Create([])
    return (judged[FAILURES], judged[OUTCOMES], no_patterns) | "WriteReports" >> WriteReports.for_run(
        config.reports,
        extra={"source": absolute(redact(config.manifest_url)), "destination": config.destination_name,
               "checksum": config.checksum},
        check=config.check,
    )
