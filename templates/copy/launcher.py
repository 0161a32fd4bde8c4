"""Dataflow Flex Template launcher for `dicom-transfer copy` (named by FLEX_TEMPLATE_PYTHON_PY_FILE)."""

import sys

from dicom_transfer.pipelines.flex_template import launch

if __name__ == "__main__":
    sys.exit(launch("copy", sys.argv[1:]))
