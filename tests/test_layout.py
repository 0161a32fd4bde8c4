"""Layouts: the standard ones, templates, and that no value can escape the destination."""

import posixpath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dicom_transfer.layout import Layout, LayoutError, sanitise_part

UIDS = {"StudyInstanceUID": "1.2", "SeriesInstanceUID": "1.2.3", "SOPInstanceUID": "1.2.3.4"}


def test_uid_layout_is_googles_export_layout():
    assert Layout.parse("uid").relative_path(UIDS) == "1.2/1.2.3/1.2.3.4.dcm"


def test_azure_layout_puts_results_under_the_operation_id():
    layout = Layout.parse("azure", "df1ff476b83a4a3eaf11b1eac2e5ac56")
    assert layout.relative_path(UIDS) == "df1ff476b83a4a3eaf11b1eac2e5ac56/results/1.2/1.2.3/1.2.3.4.dcm"


def test_template_with_keywords():
    layout = Layout.parse("{PatientID}/{StudyDate}/{Modality}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm")
    values = {**UIDS, "PatientID": "P 1", "StudyDate": "20260101", "Modality": "MR"}
    assert layout.relative_path(values) == "P 1/20260101/MR/1.2.3/1.2.3.4.dcm"
    assert layout.keywords == ("PatientID", "StudyDate", "Modality", "SeriesInstanceUID", "SOPInstanceUID")


@pytest.mark.parametrize(("value", "expected"), [
    ("../../etc", ".._.._etc"), ("..", "_.."), (".", "_."), ("a/b\\c", "a_b_c"),
    ("x\x00y\n", "x_y_"), ("C:evil", "C_evil"), ("  ", "_"),
])
def test_values_are_sanitised_into_one_safe_part(value, expected):
    assert sanitise_part(value) == expected


def test_traversal_in_a_value_stays_inside():
    layout = Layout.parse("{PatientID}/{SOPInstanceUID}.dcm")
    path = layout.relative_path({**UIDS, "PatientID": "../../../../etc/passwd"})
    assert path == ".._.._.._.._etc_passwd/1.2.3.4.dcm"
    assert posixpath.normpath("/dest/" + path).startswith("/dest/")
    assert ".." not in path.split("/")


@pytest.mark.parametrize("value", [None, "", "   "])
def test_missing_or_empty_attribute_is_a_layout_error_naming_it(value):
    layout = Layout.parse("{PatientID}/{SOPInstanceUID}.dcm")
    values = dict(UIDS) if value is None else {**UIDS, "PatientID": value}
    with pytest.raises(LayoutError, match="PatientID"):
        layout.relative_path(values)


def test_multi_valued_attribute_is_joined():
    layout = Layout.parse("{ImageType}/{SOPInstanceUID}.dcm")
    path = layout.relative_path({**UIDS, "ImageType": ("ORIGINAL", "PRIMARY")})
    assert path == "ORIGINAL_PRIMARY/1.2.3.4.dcm"


@pytest.mark.parametrize(("template", "words"), [
    ("{PatientId}/{SOPInstanceUID}.dcm", "not a DICOM keyword"),
    ("../{SOPInstanceUID}.dcm", "'..' path part"),
    ("/abs/{SOPInstanceUID}.dcm", "relative"),
    ("{SOPInstanceUID:>10}.dcm", "format specs"),
    ("{SOPInstanceUID!r}.dcm", "format specs"),
    ("static.dcm", "no {Keyword}"),
    ("{SOPInstanceUID", "malformed"),
    ("a\\{SOPInstanceUID}", "backslashes"),
])
def test_bad_templates_are_refused(template, words):
    with pytest.raises(ValueError, match=words.replace("{", r"\{").replace("(", r"\(")):
        Layout.parse(template)


@given(st.text(min_size=0, max_size=40))
def test_no_value_can_escape_the_destination(value):
    layout = Layout.parse("{PatientID}/{StudyDescription}/{SOPInstanceUID}.dcm")
    try:
        path = layout.relative_path({**UIDS, "PatientID": value, "StudyDescription": value[::-1]})
    except LayoutError as exc:
        assert "PatientID" in str(exc) or "StudyDescription" in str(exc) or "longer" in str(exc)
        return
    parts = path.split("/")
    assert len(parts) == 3
    for part in parts:
        assert part not in ("", ".", "..")
        assert "/" not in part and "\\" not in part
        assert not any(ord(c) < 32 for c in part)
    assert posixpath.normpath("/dest/" + path).startswith("/dest/")
