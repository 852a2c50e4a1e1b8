"""The ``n3`` command's entry point: Ctrl-C while the libraries load is a clean exit too."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from .app import main as run  # torch and the rest load here
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    run()
