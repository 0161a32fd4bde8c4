"""dicom-transfer: move DICOM instances in bulk with Apache Beam."""

__version__ = "0.1.0"
