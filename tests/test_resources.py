import pytest

from dicom_transfer.resources import (
    ResourceFilter,
    ResourcePath,
    iter_filter_file_lines,
    list_lines,
    parse_filter_line,
    parse_identifier,
)

GOOGLE_EXAMPLE = """\
/studies/1.123.456.789
/studies/1.666.333.111/series/123.456
/studies/1.666.333.111/series/567.890
/studies/1.888.999.222/series/123.456/instances/111
/studies/1.888.999.222/series/123.456/instances/222
/studies/1.888.999.222/series/123.456/instances/333
"""


def test_google_filter_file_example_selects_one_study_two_series_three_instances():
    paths = list(iter_filter_file_lines(GOOGLE_EXAMPLE.splitlines(), "filter.txt"))
    assert [p.level for p in paths] == ["study", "series", "series", "instance", "instance", "instance"]
    selection = ResourceFilter(paths)
    assert selection.selects("1.123.456.789", "9.9", "9.9.9")
    assert selection.selects("1.666.333.111", "567.890", "1")
    assert not selection.selects("1.666.333.111", "567.891", "1")
    assert selection.selects("1.888.999.222", "123.456", "222")
    assert not selection.selects("1.888.999.222", "123.456", "444")
    assert not selection.selects("1.888.999.223", "123.456", "111")


def test_filter_line_round_trip():
    path = parse_filter_line("/studies/1.2/series/3.4/instances/5.6")
    assert path == ResourcePath("1.2", "3.4", "5.6")
    assert path.filter_line == "/studies/1.2/series/3.4/instances/5.6"
    assert path.identifier == "1.2/3.4/5.6"


@pytest.mark.parametrize("line", [
    "studies/1.2", "/study/1.2", "/studies/1.2/series", "/studies/1.2/instances/3",
    "/studies/1.2/series/3/instances/4/frames/1", "/studies/1.a", "/studies//series/1",
    "/studies/1.2/series/03",
])
def test_malformed_filter_lines_are_refused(line):
    with pytest.raises(ValueError):
        parse_filter_line(line)


def test_malformed_line_error_names_file_and_line_number():
    lines = ["# comment", "/studies/1.2", "", "/studies/1.2/serie/3"]
    with pytest.raises(ValueError, match=r"filter\.txt line 4: '/studies/1\.2/serie/3' is not of the form"):
        list(iter_filter_file_lines(lines, "filter.txt"))


@pytest.mark.parametrize(("text", "expected"), [
    ("1.2.3", ResourcePath("1.2.3")),
    ("12.3/4.5.678", ResourcePath("12.3", "4.5.678")),
    ("123.456/7.8/9.1011.12", ResourcePath("123.456", "7.8", "9.1011.12")),
])
def test_azure_identifier_examples(text, expected):
    assert parse_identifier(text) == expected


@pytest.mark.parametrize("text", ["", "1.2/", "1/2/3/4", "1.2/../3", "1.2/x"])
def test_bad_identifiers_are_refused(text):
    with pytest.raises(ValueError):
        parse_identifier(text)


@pytest.mark.parametrize(("lines", "expected"), [
    (["1.2", "3.4"], [("1.2", "f line 1"), ("3.4", "f line 2")]),
    (["# a comment", "", "   ", "1.2\n"], [("1.2", "f line 4")]),
    (["  /studies/1.2  \r\n"], [("/studies/1.2", "f line 1")]),
    (["#only comments", "# here"], []),
])
def test_list_files_skip_blank_and_comment_lines_and_name_each_line(lines, expected):
    assert list(list_lines(lines, "f")) == expected
