"""Error types of the n3 package: every error carries a one-line message naming the file and the problem."""

from __future__ import annotations


class N3Error(Exception):
    """Base class of all errors raised by n3 for bad inputs or files."""


class ImageError(N3Error, ValueError):
    """An image file could not be read, decoded or written (also a ValueError)."""
