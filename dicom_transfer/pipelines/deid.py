"""De-identification for any pipeline: its configuration from the options, and its stages.

Beam and the de-identification modules (pydicom) are imported only when de-identifying: a run
without it reads its options without them (see ``pipelines.cli``)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING

from dicom_transfer.io.files import open_url, scheme_of
from dicom_transfer.io.preflight import StoreUnavailable, check_writable_file
from dicom_transfer.pipelines.options import UsageError
from dicom_transfer.report import absolute

if TYPE_CHECKING:
    import apache_beam as beam

    from dicom_transfer.transforms.deidentify import DeidSettings
    from dicom_transfer.transforms.results import Deidentified

OPTION_FLAGS = ("retain_uids", "retain_device_identity", "retain_institution_identity",
                "retain_patient_characteristics", "retain_longitudinal_full_dates",
                "retain_longitudinal_modified_dates", "clean_descriptors", "clean_structured_content")
DEID_ONLY = ("deid_key_env", "deid_key_file", "deid_mapping", "allow_burned_in", "retain_safe_private",
             *OPTION_FLAGS)


@dataclasses.dataclass(frozen=True)
class DeidConfig:
    """A run's de-identification: the transform's settings and where the mapping table goes."""

    settings: DeidSettings
    mapping_url: str | None = None

    def summary(self) -> dict:
        """What the summary says about it (no key, no identifier)."""
        from dicom_transfer.deid.profile import load_table

        return {"profile": "basic", "edition": load_table().edition,
                "options": self.settings.options.enabled(), "allowBurnedIn": self.settings.allow_burned_in,
                "mapping": absolute(self.mapping_url) if self.mapping_url else None}


def deid_config(options: argparse.Namespace) -> DeidConfig | None:
    """The checked de-identification of a run, or None; raises UsageError (exit 2).

    The key is loaded here once, so that a missing, empty or short key stops the run before it
    starts; the workers load it again themselves (it is never serialised).
    """
    if not getattr(options, "deidentify", None):
        given = [f"--{name.replace('_', '-')}" for name in DEID_ONLY if getattr(options, name, None)]
        if given:
            raise UsageError(f"{', '.join(given)} need(s) --deidentify basic")
        return None
    from dicom_transfer.deid.profile import ProfileOptions, parse_safe_private
    from dicom_transfer.deid.pseudonyms import DeidKeyError
    from dicom_transfer.transforms.deidentify import DeidSettings

    safe: frozenset[tuple[int, str, int]] = frozenset()
    if options.retain_safe_private:
        try:
            with open_url(options.retain_safe_private) as handle:
                lines = handle.read().decode("utf-8").splitlines()
            safe = parse_safe_private(lines, options.retain_safe_private)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise UsageError(f"--retain-safe-private: {exc}") from exc
        if not safe:
            raise UsageError(f"--retain-safe-private {options.retain_safe_private} lists no private attribute")
    try:
        profile = ProfileOptions(retain_safe_private=safe, **{name: getattr(options, name) for name in OPTION_FLAGS})
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    settings = DeidSettings(profile, key_env=options.deid_key_env, key_file=options.deid_key_file,
                            allow_burned_in=options.allow_burned_in)
    try:
        settings.load_key()
    except DeidKeyError as exc:
        raise UsageError(str(exc)) from None
    if options.deid_mapping and scheme_of(options.deid_mapping) is None:
        try:
            check_writable_file(options.deid_mapping, "--deid-mapping")
        except StoreUnavailable as exc:
            raise UsageError(str(exc)) from exc
    return DeidConfig(settings, options.deid_mapping)


def staging_url(destination: str, operation_id: str) -> str:
    """Where de-identified files wait to be written: in the destination's own store, so that every
    worker can read them and placing one is a rename (local) or a server-side copy."""
    return f"{destination.rstrip('/')}/.dicom-transfer/staging/{operation_id}"


def deidentify_stage(instances: beam.PCollection, config: DeidConfig, staging: str, keywords,
                     threads: int) -> tuple[beam.PCollection, list[beam.PCollection], list[beam.PCollection]]:
    """Add :class:`Deidentify` (and the mapping table) after ``instances``: return the de-identified
    instances, and the failures and outcomes to report."""
    from dicom_transfer.transforms.deidentify import Deidentify, WriteMapping

    deid: Deidentified = instances | "Deidentify" >> Deidentify(config.settings, staging, keywords, threads=threads,
                                                                mapping=bool(config.mapping_url))
    if config.mapping_url:
        deid.mapping | "WriteMapping" >> WriteMapping(config.mapping_url)
    return deid.instances, [deid.failures], [deid.outcomes]
