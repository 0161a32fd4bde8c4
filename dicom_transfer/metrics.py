"""Counter names shared by every pipeline (Beam Metrics namespace ``dicom_transfer``).

``success``, ``failure`` and ``unchanged`` follow the Google Cloud Healthcare
operation counters; the others add detail.
"""

NAMESPACE = "dicom_transfer"
SUCCESS = "success"
FAILURE = "failure"
UNCHANGED = "unchanged"
FILTERED = "filtered"
BYTES_WRITTEN = "bytes_written"
FILES_MATCHED = "files_matched"
INSTANCES_VALID = "instances_valid"
UNMATCHED_PATTERNS = "unmatched_patterns"
