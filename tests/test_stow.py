"""Reading STOW-RS answers (PS3.18 §10.5.3), including the shapes other servers send."""

from pathlib import Path

from dicom_transfer.stow import interpret_stow


def item(uid, reason=None):
    value = {"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.4"]},
             "00081155": {"vr": "UI", "Value": [uid]}}
    if reason is not None:
        value["00081197"] = {"vr": "US", "Value": [reason]}
    return value


def test_200_with_referenced_sequence_is_success():
    answer = {"00081199": {"vr": "SQ", "Value": [item("1.1"), item("1.2")]}}
    assert interpret_stow(200, answer, ["1.1", "1.2"]) == {"1.1": ("success", "stored"),
                                                           "1.2": ("success", "stored")}


def test_202_partial_gives_a_failure_per_failed_instance_with_its_reason():
    answer = {"00081198": {"vr": "SQ", "Value": [item("1.2", 0xA900)]},
              "00081199": {"vr": "SQ", "Value": [item("1.1")]}}
    result = interpret_stow(202, answer, ["1.1", "1.2", "1.3"])
    assert result["1.1"] == ("success", "stored")
    assert result["1.2"][0] == "failure" and "0xA900" in result["1.2"][1] and "does not match" in result["1.2"][1]
    assert result["1.3"] == ("failure", "STOW-RS 202: the server did not report this instance")


def test_409_duplicates_are_unchanged_not_failures():
    answer = {"00081198": {"vr": "SQ", "Value": [item("1.1", 45070), item("1.2", 0x0111), item("1.3", 0xC000)]}}
    result = interpret_stow(409, answer, ["1.1", "1.2", "1.3"])
    assert result["1.1"][0] == result["1.2"][0] == "unchanged"
    assert result["1.3"][0] == "failure" and "cannot understand" in result["1.3"][1]


def test_200_without_a_body_is_success():
    assert interpret_stow(200, {}, ["1.1"]) == {"1.1": ("success", "stored")}


def test_the_retry_policy_is_the_one_urllib3_applies():
    """io.retry owns the policy: urllib3's Retry for GET is built from --max-attempts and its backoff."""
    import requests

    from dicom_transfer.io.dicomweb import DicomwebClient
    from dicom_transfer.io.retry import BODY_ERRORS, RETRYABLE_STATUS, RetryPolicy

    policy = RetryPolicy(attempts=4, base=0.25, cap=8.0)
    retry = policy.urllib3_retry(RETRYABLE_STATUS - {500})
    assert (retry.total, retry.connect, retry.read, retry.status, retry.other) == (3, 3, 3, 3, 0)
    assert (retry.backoff_factor, retry.backoff_max, retry.backoff_jitter) == (0.25, 8.0, 0.25)
    assert retry.status_forcelist == [408, 429, 502, 503, 504]
    assert set(retry.allowed_methods) == {"GET", "HEAD"}
    assert retry.respect_retry_after_header and not retry.raise_on_status
    client = DicomwebClient("http://127.0.0.1:9/dicom-web", retry=policy)
    used = client.session.get_adapter("http://127.0.0.1:9/").max_retries
    assert (used.total, used.status_forcelist) == (3, sorted(RETRYABLE_STATUS))
    # a body cut off mid-way is transient, as requests reports it
    assert issubclass(requests.exceptions.ChunkedEncodingError, BODY_ERRORS)


def test_a_streamed_stow_body_is_the_same_bytes_whatever_the_read_size(tmp_path):
    """The body is read in blocks of any size (urllib3 asks for 1 MiB): the same multipart bytes,
    never more than asked for, and as long as its Content-Length."""
    from dicom_transfer.io.dicomweb import MultipartBody

    files = []
    for n, size in enumerate((0, 5, 70_000, 1_200_000, 3)):
        path = tmp_path / f"{n}.dcm"
        path.write_bytes(bytes((n + i) % 251 for i in range(size)))
        files.append((str(path), size))
    expected = b"".join(b"--B\r\nContent-Type: application/dicom\r\nContent-Length: %d\r\n\r\n" % size
                        + Path(path).read_bytes() + b"\r\n" for path, size in files) + b"--B--\r\n"
    for block in (997, 16384, 65536, 1 << 20, 5 << 20):
        body, read = MultipartBody(files, boundary="B"), []
        while data := body.read(block):
            assert len(data) <= block
            read.append(data)
        assert b"".join(read) == expected and len(body) == len(expected)
    assert MultipartBody(files, boundary="B").read() == expected
