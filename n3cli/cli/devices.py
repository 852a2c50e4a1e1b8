"""Device and thread choice (re-exported from :mod:`n3cli.devices` for the subcommands)."""

from ..devices import pick_device, set_threads

__all__ = ["pick_device", "set_threads"]
