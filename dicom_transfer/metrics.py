"""Counter names shared by every pipeline (Beam Metrics namespace ``dicom_transfer``).

``success``, ``failure`` and ``unchanged`` follow the Google Cloud Healthcare
operation counters; the others add detail.
"""

from dicom_transfer.vocabulary import Kind

NAMESPACE = "dicom_transfer"
# Plain strings (Beam's counter names, the summary's keys), spelled once in vocabulary.Kind.
SUCCESS, FAILURE, UNCHANGED, FILTERED = (k.value for k in (Kind.SUCCESS, Kind.FAILURE, Kind.UNCHANGED, Kind.FILTERED))
BYTES_WRITTEN = "bytes_written"
DIMSE_WARNINGS = "dimse_warnings"  # stored, with a C-STORE warning status
FILES_MATCHED = "files_matched"
INSTANCES_VALID = "instances_valid"
UNMATCHED_PATTERNS = "unmatched_patterns"
