"""Assembled pipelines and the command line."""
