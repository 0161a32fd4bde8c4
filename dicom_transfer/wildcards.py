"""Google Cloud Healthcare import wildcards, on top of plain listing.

The semantics are those of the Cloud Healthcare DICOM import ``gcsSource.uri``:

* ``*`` matches zero or more characters other than ``/``;
* ``?`` matches exactly one character other than ``/``;
* ``**`` matches zero or more characters including ``/``. It must be the last
  wildcard of the pattern and may only be followed by a literal suffix without
  ``/`` (``D/**.dcm`` is every ``.dcm`` file below ``D``, recursively); no other
  wildcard may appear in a pattern that uses it.

A pattern without wildcards names a file, or a directory meaning everything
below it. Parsing is pure: :func:`parse_pattern` raises ``ValueError`` with a
clear message for a bad pattern, before any listing happens.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable

WILDCARD_CHARS = frozenset("*?")


@dataclasses.dataclass(frozen=True)
class Pattern:
    """A parsed input pattern.

    Attributes
    ----------
    text:
        The pattern as the user wrote it.
    root:
        The longest literal directory prefix (no trailing ``/``): listing starts here.
    components:
        Path components after ``root`` (may contain ``*``/``?``), for level-by-level
        listing. Empty for a recursive or literal pattern.
    recursive_regex:
        For ``**`` patterns: regex over the path relative to ``root``.
    literal:
        True if the pattern has no wildcard at all.
    """

    text: str
    root: str
    components: tuple[str, ...] = ()
    recursive_regex: str | None = None
    literal: bool = False

    @property
    def is_recursive(self) -> bool:
        return self.recursive_regex is not None

    def matches_relative(self, relative: str) -> bool:
        """True if ``relative`` (a path below :attr:`root`) matches the pattern."""
        if self.literal:
            return relative == ""
        if self._recursive is not None:
            return self._recursive.fullmatch(relative) is not None
        parts = relative.split("/")
        return len(parts) == len(self.components) and all(
            component_matches(c, p) for c, p in zip(self.components, parts, strict=True)
        )

    def relative_matcher(self) -> Callable[[str], bool]:
        """:meth:`matches_relative` as one function (for a listing, which asks it of every file)."""
        if self._recursive is None or self.literal:
            return self.matches_relative
        fullmatch = self._recursive.fullmatch
        return lambda relative: fullmatch(relative) is not None

    @functools.cached_property
    def _recursive(self) -> re.Pattern[str] | None:
        """:attr:`recursive_regex`, compiled once; DOTALL: a name may hold a line break, as any
        other character."""
        return None if self.recursive_regex is None else re.compile(self.recursive_regex, re.DOTALL)


def has_wildcard(text: str) -> bool:
    return any(c in WILDCARD_CHARS for c in text)


def component_regex(component: str) -> str:
    """Regex for one path component with ``*`` and ``?`` (neither matches ``/``)."""
    out = []
    for char in component:
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        else:
            out.append(re.escape(char))
    return "".join(out)


def component_matches(component: str, name: str) -> bool:
    """True if the file or directory ``name`` matches ``component``."""
    if not has_wildcard(component):
        return component == name
    return re.fullmatch(component_regex(component), name) is not None


def split_scheme(url: str) -> tuple[str, str]:
    """Split ``gs://bucket/a`` into (``gs://``, ``bucket/a``); local paths get ``""``.

    The one place that decides what is a URL (``io.files.scheme_of`` builds on it).
    """
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]+://)(.*)$", url)
    if match:
        return match.group(1), match.group(2)
    return "", url


def parse_pattern(text: str) -> Pattern:
    """Parse a Google-style wildcard pattern.

    Parameters
    ----------
    text:
        A local path or a URL such as ``gs://bucket/dir/**.dcm``.

    Returns
    -------
    Pattern

    Raises
    ------
    ValueError
        If ``**`` is not at the end, is followed by ``/``, or is combined with
        another wildcard, or if the pattern is empty.

    Examples
    --------
    >>> parse_pattern("D/**.dcm").matches_relative("sub/x.dcm")
    True
    >>> parse_pattern("D/Example?.dcm").matches_relative("Example01.dcm")
    False
    """
    if not text or not text.strip():
        raise ValueError("empty input pattern")
    if "\x00" in text or any(ord(c) < 32 for c in text):
        raise ValueError(f"input pattern {text!r} contains control characters")
    scheme, path = split_scheme(text)
    if "**" in path:
        return _parse_recursive(text, scheme, path)
    if not has_wildcard(path):
        return Pattern(text=text, root=scheme + path.rstrip("/") if path.rstrip("/") else text,
                       literal=True)
    parts = path.split("/")
    first = next(i for i, part in enumerate(parts) if has_wildcard(part))
    root = "/".join(parts[:first])
    components = tuple(parts[first:])
    if components[-1] == "":
        raise ValueError(
            f"bad input pattern {text!r}: it ends with '/' after a wildcard; "
            "write 'DIR/*' for the files in matching directories"
        )
    if any(c == "" for c in components):
        raise ValueError(f"bad input pattern {text!r}: empty path component ('//')")
    return Pattern(text=text, root=scheme + root, components=components)


def _parse_recursive(text: str, scheme: str, path: str) -> Pattern:
    index = path.index("**")
    head, suffix = path[:index], path[index + 2:]
    problem = None
    if "**" in suffix or "*" in suffix or "?" in suffix:
        problem = "'**' must be the last wildcard, followed only by a literal suffix such as '.dcm'"
    elif "/" in suffix:
        problem = ("'**' may only be followed by a file-name suffix without '/' "
                   "(e.g. 'D/**.dcm'); 'a/**/b.dcm' is not supported")
    elif has_wildcard(head):
        problem = "'**' cannot be combined with other wildcards ('*', '?') in one pattern"
    if problem:
        raise ValueError(f"bad input pattern {text!r}: {problem}")
    root, _, name_prefix = head.rpartition("/")
    if not root and head.startswith("/"):
        root = "/"
    regex = re.escape(name_prefix) + ".*" + re.escape(suffix)
    return Pattern(text=text, root=scheme + root, recursive_regex=regex)


def directory_pattern(pattern: Pattern) -> Pattern:
    """The recursive pattern meaning "everything below" a literal directory pattern."""
    return Pattern(text=pattern.text, root=pattern.root, recursive_regex=".*")
