import pytest

from dicom_transfer.uids import check_uid, is_valid_uid, uid_problem


@pytest.mark.parametrize("uid", [
    "1.2.840.10008.1.2.1", "0", "1.0.2", "2.25.329800735698586629295641978511506172918",
    "1." + "2" * 62,  # exactly 64 characters
])
def test_valid_uids(uid):
    assert is_valid_uid(uid)


@pytest.mark.parametrize(("uid", "reason"), [
    ("", "empty"),
    ("1.2.abc", "not made of digits"),
    ("1.02.3", "leading zero"),
    ("00.1", "leading zero"),
    ("1..2", "empty component"),
    (".1.2", "empty component"),
    ("1.2.", "empty component"),
    ("1." + "2" * 63, "65 characters"),
    ("../..", "empty component"),
    ("1.2/3", "not made of digits"),
    ("1.2 ", "not made of digits"),
    ("1.٣", "not made of digits"),  # a non-ASCII digit
])
def test_invalid_uids_say_why(uid, reason):
    problem = uid_problem(uid)
    assert problem is not None and reason in problem


def test_check_uid_names_what_it_checked():
    with pytest.raises(ValueError, match=r"StudyInstanceUID '1\.02' is not a valid UID"):
        check_uid("1.02", "StudyInstanceUID")

