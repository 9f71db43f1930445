"""Readers for the file formats the demo corpus is extracted from, one format per module."""
