"""Error types of the n3 package: every error carries a one-line message naming the file and the problem.

Messages speak of values and files, never of command-line flags: a front end knows its own spelling. An error
whose remedy is a setting says which one in :attr:`N3Error.about` (the library's parameter name), and the CLI
maps it to its flag (:data:`n3cli.cli.common.FLAG_HINTS`).
"""

from __future__ import annotations


class N3Error(Exception):
    """Base class of all errors raised by n3 for bad inputs or files."""

    #: The library parameter that would lift this error (e.g. ``"max_pixels"``), or None.
    about: str | None = None


class ImageError(N3Error, ValueError):
    """An image file could not be read, decoded or written (also a ValueError)."""


class TooLargeError(ImageError):
    """An image over the pixel limit (``max_pixels``) that guards against decompression bombs."""

    about = "max_pixels"


class OutputExistsError(N3Error):
    """An output exists and replacing it was not asked for (``overwrite=False``)."""

    about = "overwrite"


class ImageExistsError(ImageError, OutputExistsError):
    """An image output exists and replacing it was not asked for."""
