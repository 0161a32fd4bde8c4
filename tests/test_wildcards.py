"""Google Cloud Healthcare import wildcards: the seed's examples, bad patterns, and listing."""

import re

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from hypothesis import given
from hypothesis import strategies as st

from dicom_transfer.io.listing import NotAFile, list_pattern
from dicom_transfer.wildcards import directory_pattern, parse_pattern


def matches(pattern: str, relative_to_root: str) -> bool:
    return parse_pattern(pattern).matches_relative(relative_to_root)


@pytest.mark.parametrize(("name", "expected"), [
    ("Example.dcm", True), ("Example22.dcm", True), ("Example1.dcm", True),
    ("Other.dcm", False), ("Example.dcm.bak", False),
])
def test_star_example_from_google(name, expected):
    assert matches("D/Example*.dcm", name) is expected


def test_star_does_not_cross_folders():
    assert not matches("D/Example*.dcm", "sub/Example1.dcm")


@pytest.mark.parametrize(("name", "expected"), [
    ("Example1.dcm", True), ("Example.dcm", False), ("Example01.dcm", False),
])
def test_question_mark_example_from_google(name, expected):
    assert matches("D/Example?.dcm", name) is expected


@pytest.mark.parametrize(("relative", "expected"), [
    ("a.dcm", True), ("sub/a.dcm", True), ("sub/deeper/a.dcm", True),
    ("a.txt", False), ("sub/a.dcm.txt", False),
])
def test_double_star_with_extension_is_recursive(relative, expected):
    assert matches("D/**.dcm", relative) is expected


@pytest.mark.parametrize("pattern", [
    "a/**/b.dcm", "D/**/", "D/**.dcm/x", "D/*/**.dcm", "D/Ex?mple/**", "D/****", "D/**.d?m",
    "", "  ", "D/x\x00.dcm",
])
def test_bad_patterns_are_refused_with_a_reason(pattern):
    with pytest.raises(ValueError) as excinfo:
        parse_pattern(pattern)
    assert "pattern" in str(excinfo.value)


def test_literal_prefix_is_the_listing_root():
    assert parse_pattern("gs://bucket/a/b/*.dcm").root == "gs://bucket/a/b"
    assert parse_pattern("gs://bucket/a/b/**.dcm").root == "gs://bucket/a/b"
    assert parse_pattern("/data/x*/y/*.dcm").root == "/data"
    assert parse_pattern("/data/x*/y/*.dcm").components == ("x*", "y", "*.dcm")


# A reference implementation of Google's semantics, written independently as a
# translation of the documented rules into one regular expression.
def reference_match(pattern: str, path: str) -> bool:
    regex = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            regex += ".*"
            i += 2
        elif pattern[i] == "*":
            regex += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            regex += "[^/]"
            i += 1
        else:
            regex += re.escape(pattern[i])
            i += 1
    return re.fullmatch(regex, path) is not None


names = st.text(alphabet="ab.?*", min_size=1, max_size=6)
paths = st.lists(st.text(alphabet="ab.c", min_size=1, max_size=5), min_size=1, max_size=3)


@given(components=st.lists(names, min_size=1, max_size=3), path=paths)
def test_matcher_agrees_with_reference_for_single_level_wildcards(components, path):
    pattern = "R/" + "/".join(components)
    try:
        parsed = parse_pattern(pattern)
    except ValueError:
        assert "**" in pattern
        return
    assert matches_full(parsed, "R/" + "/".join(path)) == reference_match(pattern, "R/" + "/".join(path))


@given(prefix=st.text(alphabet="ab.", max_size=4), suffix=st.text(alphabet="ab.", max_size=4), path=paths)
def test_matcher_agrees_with_reference_for_recursive_wildcards(prefix, suffix, path):
    pattern = f"R/{prefix}**{suffix}"
    full = "R/" + "/".join(path)
    assert matches_full(parse_pattern(pattern), full) == reference_match(pattern, full)


def matches_full(parsed, full: str) -> bool:
    """Match a full path: it must lie below the pattern's root, then match the rest."""
    if parsed.literal:
        return full == parsed.root
    if not full.startswith(parsed.root + "/"):
        return False
    return parsed.matches_relative(full[len(parsed.root) + 1:])


class CountingMemoryFileSystem(MemoryFileSystem):
    """An in-memory store that records which folders were listed."""

    protocol = "countingmem"
    calls: list[tuple[str, str]] = []

    @classmethod
    def _strip_protocol(cls, path):
        if path.startswith("countingmem://"):
            path = path[len("countingmem://"):]
        return super()._strip_protocol(path)

    def ls(self, path, detail=True, **kwargs):
        self.calls.append(("ls", self._strip_protocol(path)))
        return super().ls(path, detail=detail, **kwargs)

    def find(self, path, *args, **kwargs):
        self.calls.append(("find", self._strip_protocol(path)))
        return super().find(path, *args, **kwargs)


fsspec.register_implementation("countingmem", CountingMemoryFileSystem, clobber=True)


@pytest.fixture
def store():
    fs = fsspec.filesystem("countingmem")
    for path in ["D/Example.dcm", "D/Example1.dcm", "D/Example01.dcm", "D/Example22.dcm",
                 "D/sub/Example2.dcm", "D/sub/deep/x.dcm", "D/notes.txt", "D/dir.dcm/inner.dcm",
                 "Other/huge/tree/y.dcm"]:
        fs.pipe(f"/{path}", b"x" * 10)
    CountingMemoryFileSystem.calls.clear()
    yield fs
    fs.rm("/", recursive=True)


def listed(pattern: str) -> tuple[list[str], list[str]]:
    files, directories = [], []
    for found in list_pattern(parse_pattern(pattern)):
        if isinstance(found, NotAFile):
            directories.append(found.args[0].split("/D/", 1)[1])
        else:
            files.append(found.url.split("/D/", 1)[1])
    return files, directories


def test_listing_star_lists_only_that_folder(store):
    files, directories = listed("countingmem://D/Example*.dcm")
    assert files == ["Example.dcm", "Example01.dcm", "Example1.dcm", "Example22.dcm"]
    assert CountingMemoryFileSystem.calls == [("ls", "/D")]


def test_listing_question_mark(store):
    assert listed("countingmem://D/Example?.dcm")[0] == ["Example1.dcm"]


def test_listing_recursive_starts_at_literal_prefix(store):
    files, _ = listed("countingmem://D/**.dcm")
    assert files == ["Example.dcm", "Example01.dcm", "Example1.dcm", "Example22.dcm",
                     "dir.dcm/inner.dcm", "sub/Example2.dcm", "sub/deep/x.dcm"]
    assert all(path.startswith("/D") for _, path in CountingMemoryFileSystem.calls)


def test_directory_matched_by_last_component_is_reported_not_listed(store):
    files, directories = listed("countingmem://D/*.dcm")
    assert "dir.dcm" in directories
    assert not any(f.startswith("dir.dcm/") for f in files)


def test_literal_folder_means_everything_below(store):
    files, _ = listed("countingmem://D/sub")
    assert files == ["sub/Example2.dcm", "sub/deep/x.dcm"]


def test_wildcard_in_middle_walks_level_by_level(store):
    files, _ = listed("countingmem://D/s*/Example?.dcm")
    assert files == ["sub/Example2.dcm"]
    assert ("ls", "/Other") not in CountingMemoryFileSystem.calls
    assert ("find", "/D") not in CountingMemoryFileSystem.calls


def test_missing_root_matches_nothing(store):
    assert listed("countingmem://Nope/**") == ([], [])


@pytest.mark.parametrize(("text", "relative", "expected"), [
    ("D/**.dcm", "a\nb.dcm", True), ("D/**.dcm", "sub/a\r\nb.dcm", True), ("D/**.dcm", "a.dcm\n", False),
    ("D/**", "x.txt\n", True), ("D/a**", "a\n", True), ("D/a**", "\na", False),
])
def test_a_name_with_a_line_break_matches_as_any_other_name(text, relative, expected):
    pattern = parse_pattern(text)
    assert pattern.matches_relative(relative) is expected
    assert pattern.relative_matcher()(relative) is expected


def test_a_folder_means_every_file_below_it_whatever_its_name():
    everything = directory_pattern(parse_pattern("D"))
    assert everything.relative_matcher()("new\nline.dcm") and everything.matches_relative("new\nline.dcm")
