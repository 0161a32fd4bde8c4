"""Where each instance goes: output layouts built from DICOM attributes.

* ``uid`` (default): ``{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm``
  (the Google Cloud Healthcare export layout);
* ``azure``: ``{operation id}/results/{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm``
  (the Azure DICOM service export layout);
* any template of DICOM keywords, e.g. ``{PatientID}/{StudyDate}/{SOPInstanceUID}.dcm``.

Values are sanitised so that every path part is a plain, non-empty name: no
separator, no control character, never ``.`` or ``..``. No output can land
outside the destination.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import string
from collections.abc import Iterable, Mapping, Sequence

UID_TEMPLATE = "{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm"
MAX_PART_BYTES = 255
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')


class LayoutError(ValueError):
    """An instance cannot be placed: a missing attribute or an unusable value."""


@dataclasses.dataclass(frozen=True)
class Layout:
    """A parsed output layout.

    Examples
    --------
    >>> Layout.parse("uid").relative_path({"StudyInstanceUID": "1.2", "SeriesInstanceUID": "1.3",
    ...                                    "SOPInstanceUID": "1.4"})
    '1.2/1.3/1.4.dcm'
    """

    name: str
    template: str
    prefix: tuple[str, ...] = ()

    @classmethod
    def parse(cls, spec: str, operation_id: str | None = None) -> Layout:
        """Parse ``uid``, ``azure`` or a template.

        Raises
        ------
        ValueError
            For an unknown keyword, a format spec, or a template that could
            escape the destination (``..``, absolute paths).
        """
        if spec == "uid":
            return cls("uid", UID_TEMPLATE)
        if spec == "azure":
            if not operation_id:
                raise ValueError("the azure layout needs an operation id")
            return cls("azure", UID_TEMPLATE, prefix=(sanitise_part(operation_id), "results"))
        validate_template(spec)
        return cls("template", spec)

    @property
    def keywords(self) -> tuple[str, ...]:
        return template_keywords(self.template)

    @property
    def attribute_keywords(self) -> tuple[str, ...]:
        """Its keywords other than the three UIDs (which validation always reads)."""
        return other_than_uids(self.keywords)

    def relative_path(self, values: Mapping[str, object]) -> str:
        """The output path below the destination for an instance's attribute values.

        Raises
        ------
        LayoutError
            If an attribute is missing or empty, or a part is too long.
        """
        rendered = []
        for literal, keyword in _parsed(self.template):
            rendered.append(literal)
            if keyword is not None:
                rendered.append(_value_text(keyword, values))
        parts = [*self.prefix]
        for raw_part in "".join(rendered).split("/"):
            part = raw_part
            if not part:
                continue  # a "//" in the template collapses
            if len(part.encode("utf-8")) > MAX_PART_BYTES:
                raise LayoutError(f"path part {part[:40]!r}... is longer than {MAX_PART_BYTES} bytes")
            parts.append(part)
        if not parts:
            raise LayoutError("layout produced an empty path")
        return "/".join(parts)


@functools.lru_cache(maxsize=16)
def _parsed(template: str) -> tuple[tuple[str, str | None], ...]:
    """The literal text and keyword of each part of ``template`` (parsed once)."""
    return tuple((literal, keyword) for literal, keyword, _, _ in string.Formatter().parse(template))


def _value_text(keyword: str, values: Mapping[str, object]) -> str:
    if keyword not in values or values[keyword] is None:
        raise LayoutError(f"attribute {keyword} is missing, so the layout cannot place the instance")
    value = values[keyword]
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):  # pydicom's MultiValue too
        text = "_".join(str(v) for v in value).strip()
    else:
        text = str(value).strip()
    if not text:
        raise LayoutError(f"attribute {keyword} is empty, so the layout cannot place the instance")
    return sanitise_part(text)


def sanitise_part(text: str) -> str:
    """Make ``text`` a safe single path part.

    Separators, control characters and characters that are invalid in file
    names on common systems become ``_``; a part made only of dots is prefixed
    with ``_`` so it can never mean "this" or "parent" directory.
    """
    cleaned = _UNSAFE.sub("_", text).strip()
    if not cleaned:
        return "_"
    if set(cleaned) == {"."}:
        return "_" + cleaned
    return cleaned


def template_keywords(template: str) -> tuple[str, ...]:
    return tuple(
        keyword for _, keyword, _, _ in string.Formatter().parse(template) if keyword is not None
    )


def validate_template(template: str) -> None:
    """Refuse templates that use unknown keywords or could leave the destination.

    Raises
    ------
    ValueError
        With a message that says what to change.
    """
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"layout template {template!r} is malformed: {exc}") from exc
    keywords = []
    for _, keyword, spec, conversion in fields:
        if keyword is None:
            continue
        if spec or conversion:
            raise ValueError(f"layout template {template!r}: use plain {{Keyword}} fields, "
                             f"without format specs or conversions")
        if keyword not in _UIDS and _tag_for_keyword(keyword) is None:
            raise ValueError(f"layout template {template!r}: {keyword!r} is not a DICOM keyword "
                             "(keywords are case-sensitive, e.g. PatientID, StudyDate)")
        keywords.append(keyword)
    if not keywords:
        raise ValueError(f"layout template {template!r} has no {{Keyword}} field: every instance "
                         "would go to the same path")
    if template.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", template):
        raise ValueError(f"layout template {template!r} must be relative to the destination")
    literal_text = "".join(literal for literal, *_ in fields)
    if "\\" in literal_text or any(ord(c) < 32 for c in literal_text):
        raise ValueError(f"layout template {template!r} contains backslashes or control characters")
    for part in template.split("/"):
        if part in (".", ".."):
            raise ValueError(f"layout template {template!r} contains a {part!r} path part")


_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")  # the default layouts' keywords


def other_than_uids(keywords: Iterable[str]) -> tuple[str, ...]:
    """``keywords`` without the three UIDs, in order."""
    return tuple(keyword for keyword in keywords if keyword not in _UIDS)


def _tag_for_keyword(keyword: str) -> int | None:
    from pydicom.datadict import tag_for_keyword  # pydicom only for a layout template's keywords

    return tag_for_keyword(keyword)
