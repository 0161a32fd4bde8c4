"""Dataflow Flex Template launcher for every pipeline (named by FLEX_TEMPLATE_PYTHON_PY_FILE).

templates/Dockerfile sets DICOM_TRANSFER_PIPELINE (copy, import, export or migrate) at build time,
and DICOM_TRANSFER_IMAGE to the image's own name, so that the workers run the image the launcher
runs in (same Beam, same packages).
"""

import os
import sys

from dicom_transfer.pipelines.flex_template import launch

if __name__ == "__main__":
    pipeline = os.environ.get("DICOM_TRANSFER_PIPELINE")
    if not pipeline:
        sys.exit("error: DICOM_TRANSFER_PIPELINE is not set (build the image with --build-arg PIPELINE=...)")
    sys.exit(launch(pipeline, sys.argv[1:], image=os.environ.get("DICOM_TRANSFER_IMAGE") or None))
