"""Progress lines during long runs."""


def test_progress_lines_say_count_bytes_and_rate(caplog):
    import logging

    from dicom_transfer.progress import ProgressLog

    progress = ProgressLog("write", interval=0.0)
    with caplog.at_level(logging.INFO, logger="dicom_transfer.progress"):
        progress.add(1, 2_000_000)
        progress.add(1, 3_000_000)
    assert len(caplog.records) == 2
    assert caplog.records[-1].getMessage().startswith("write: 2 instances, 5.0 MB, ")
    assert "instances/s" in caplog.records[-1].getMessage()
