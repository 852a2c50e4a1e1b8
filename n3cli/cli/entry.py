"""The ``n3`` command's entry point: Ctrl-C at any moment, while the libraries load included, is a clean exit."""

from __future__ import annotations

import sys


def _interrupted() -> None:
    print("interrupted", file=sys.stderr)
    sys.exit(130)


def main() -> None:
    try:
        from .app import main as run  # torch and the rest load here

        run()
    except KeyboardInterrupt:
        _interrupted()
    except Exception as exc:
        if type(exc).__name__ == "Abort":  # Click's form of Ctrl-C while it parses the command line
            _interrupted()
        raise
