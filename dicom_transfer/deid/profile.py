"""PS3.15 Table E.1-1 as data, and the action it gives each attribute under the chosen options.

The table is ``annex_e_table.json`` (one data file, naming the edition it was taken from;
``scripts/build_annex_e_table.py`` makes it). Actions (PS3.15 E.1.1): ``D`` a dummy value,
``Z`` a zero-length value (or a dummy), ``X`` removed, ``K`` kept, ``C`` cleaned, ``U`` a
replaced UID. Where the table allows a choice (``X/Z``, ``X/D``, ``Z/D``, ``X/Z/D``,
``X/Z/U*``) "unless needed for IOD conformance", the attribute is kept in the least
destructive form the table allows (``Z``, ``D``, ``D``, ``D``, ``U*``): the instance's Type 1
and Type 2 attributes stay present, and no form keeps an identifying value.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources

DUMMY, ZERO, REMOVE, KEEP, CLEAN, UID, UIDS_INSIDE = "D", "Z", "X", "K", "C", "U", "U*"
COMBINED = {"X/Z": ZERO, "X/D": DUMMY, "Z/D": DUMMY, "X/Z/D": DUMMY, "X/Z/U*": UIDS_INSIDE}

# PS3.16 CID 7050 De-identification Method: the codes of the profile and of each option.
METHOD_CODES = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "retain_safe_private": ("113111", "Retain Safe Private Option"),
    "retain_uids": ("113110", "Retain UIDs Option"),
    "retain_device_identity": ("113109", "Retain Device Identity Option"),
    "retain_institution_identity": ("113112", "Retain Institution Identity Option"),
    "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
    "retain_longitudinal_full_dates": ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    "retain_longitudinal_modified_dates": ("113107",
                                           "Retain Longitudinal Temporal Information Modified Dates Option"),
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
    "clean_structured_content": ("113104", "Clean Structured Content Option"),
}
_SAFE_PRIVATE = re.compile(r"^\(?\s*([0-9A-Fa-f]{4})\s*,\s*[xX]{2}([0-9A-Fa-f]{2})\s*\)?\s+(\S.*?)\s*$")


@dataclasses.dataclass(frozen=True)
class AnnexETable:
    """Table E.1-1: ``{tag: (basic action, {option: action})}``, repeating groups, private attributes."""

    edition: str
    attributes: dict[int, tuple[str, dict[str, str]]]
    repeating: tuple[tuple[int, int, str, dict[str, str]], ...]  # (mask, value, basic, options)
    private: tuple[str, dict[str, str]]
    options: tuple[str, ...]


@lru_cache(maxsize=1)
def load_table() -> AnnexETable:
    """The table shipped with the package (read once per process)."""
    text = resources.files("dicom_transfer.deid").joinpath("annex_e_table.json").read_text("utf-8")
    data = json.loads(text)
    attributes: dict[int, tuple[str, dict[str, str]]] = {}
    repeating: list[tuple[int, int, str, dict[str, str]]] = []
    private: tuple[str, dict[str, str]] = (REMOVE, {})
    for row in data["attributes"]:
        entry = (row["basic"], row.get("options", {}))
        if row["tag"] == "private":
            private = entry
            continue
        group, element = row["tag"].strip("()").split(",")
        hex_text = group + element
        if "X" in hex_text:
            mask = int("".join("0" if c == "X" else "F" for c in hex_text), 16)
            repeating.append((mask, int(hex_text.replace("X", "0"), 16), *entry))
        else:
            attributes[int(hex_text, 16)] = entry
    return AnnexETable(data["edition"], attributes, tuple(repeating), private, tuple(data["options"]))


@dataclasses.dataclass(frozen=True)
class ProfileOptions:
    """The profile's options (PS3.15 E.3), named as in the standard.

    ``retain_safe_private`` is the list of private attributes known to be safe, as
    ``(group, private creator, element byte)``; an empty list means the option is off.
    The Clean Pixel Data, Clean Recognizable Visual Features and Clean Graphics options are
    not offered: pixel data and overlays pass through unchanged (instances with burned-in
    annotation are refused instead).
    """

    retain_safe_private: frozenset[tuple[int, str, int]] = frozenset()
    retain_uids: bool = False
    retain_device_identity: bool = False
    retain_institution_identity: bool = False
    retain_patient_characteristics: bool = False
    retain_longitudinal_full_dates: bool = False
    retain_longitudinal_modified_dates: bool = False
    clean_descriptors: bool = False
    clean_structured_content: bool = False

    def __post_init__(self) -> None:
        if self.retain_longitudinal_full_dates and self.retain_longitudinal_modified_dates:
            raise ValueError("the Retain Longitudinal Temporal Information options with full dates and with "
                             "modified dates exclude each other")

    def enabled(self) -> list[str]:
        """The names of the options in force, in the standard's order."""
        return [name for name in METHOD_CODES if name != "basic" and getattr(self, name)]


def parse_safe_private(lines: Iterable[str], where: str = "safe-private list") -> frozenset[tuple[int, str, int]]:
    """Parse a safe-private list: one ``(gggg,xxee) PRIVATE CREATOR`` per line (``#`` comments).

    Raises
    ------
    ValueError
        On a malformed line or an even group, naming the line.
    """
    safe = set()
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        match = _SAFE_PRIVATE.match(text)
        if not match:
            raise ValueError(f"{where} line {number}: expected '(gggg,xxee) PRIVATE CREATOR', got {text[:60]!r}")
        group = int(match.group(1), 16)
        if group % 2 == 0:
            raise ValueError(f"{where} line {number}: group {group:04X} is not a private (odd) group")
        safe.add((group, match.group(3), int(match.group(2), 16)))
    return frozenset(safe)


ACTIONS_KEPT = 1 << 16  # actions remembered per profile, those of the table included


class Profile:
    """The action for each attribute under ``options``.

    Examples
    --------
    >>> Profile(ProfileOptions()).action(0x00100010)  # Patient's Name
    'Z'
    >>> Profile(ProfileOptions(retain_uids=True)).action(0x0020000D)  # Study Instance UID
    'K'
    """

    def __init__(self, options: ProfileOptions) -> None:
        self.options = options
        table = load_table()
        self.edition = table.edition
        enabled = set(options.enabled())
        self._actions: dict[int, str | None] = {tag: _resolve(basic, opts, enabled)
                                                for tag, (basic, opts) in table.attributes.items()}
        self._repeating = tuple((mask, value, _resolve(basic, opts, enabled))
                                for mask, value, basic, opts in table.repeating)
        self.private_action = _resolve(*table.private, enabled)

    def action(self, tag: int) -> str | None:
        """The action for a standard attribute; ``None`` when the table does not list it (kept)."""
        try:
            return self._actions[tag]
        except KeyError:
            pass
        found = next((action for mask, value, action in self._repeating if tag & mask == value), None)
        if len(self._actions) < ACTIONS_KEPT:  # remembered: tags recur in every instance
            self._actions[tag] = found
        return found

    def method_codes(self) -> list[tuple[str, str]]:
        """(code value, meaning) of the profile and each option in force (scheme DCM)."""
        return [METHOD_CODES["basic"], *(METHOD_CODES[name] for name in self.options.enabled())]


def _resolve(basic: str, options: dict[str, str], enabled: set[str]) -> str:
    """An option in force that says K wins over one that says C, which wins over the basic action."""
    chosen = {action for option, action in options.items() if option in enabled}
    if KEEP in chosen:
        return KEEP
    if CLEAN in chosen:
        return CLEAN
    return COMBINED.get(basic, basic)
