"""Where bytes come from and where they go: local disk and fsspec object stores."""

from dicom_transfer.elements import FileRef
from dicom_transfer.io.destination import Destination, DestinationExists
from dicom_transfer.io.files import file_url, open_url, split_url
from dicom_transfer.io.listing import list_pattern

__all__ = [
    "Destination",
    "DestinationExists",
    "FileRef",
    "file_url",
    "list_pattern",
    "open_url",
    "split_url",
]
