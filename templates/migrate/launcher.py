"""Dataflow Flex Template launcher for `dicom-transfer migrate` (named by FLEX_TEMPLATE_PYTHON_PY_FILE)."""

import sys

from dicom_transfer.pipelines.flex_template import launch

if __name__ == "__main__":
    sys.exit(launch("migrate", sys.argv[1:]))
