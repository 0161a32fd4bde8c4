"""Kept for Beam workers, which install the package with ``--setup_file ./setup.py``; the metadata is in pyproject.toml."""

from setuptools import setup

setup()
