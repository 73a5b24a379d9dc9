"""Readers of source layouts: the official ISIC downloads and generic labelled folders or CSVs
(:func:`read_source` detects the layout and reads the labels)."""

from attnmel_cli.data.sources.files import Entry, FileIndex, Source
from attnmel_cli.data.sources.layout import LAYOUTS, read_source

__all__ = ["LAYOUTS", "Entry", "FileIndex", "Source", "read_source"]
