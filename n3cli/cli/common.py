"""What every subcommand shares: error handling, console, device choice."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from ..errors import N3Error

F = TypeVar("F", bound=Callable[..., Any])

#: Messages and progress go to stderr; stdout is kept for machine-readable output (--json).
err_console = Console(stderr=True)
out_console = Console()

EXIT_BAD_INPUT = 2
EXIT_PARTIAL = 1


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def handle_errors(fn: F) -> F:
    """Turn expected failures into a one-line message and exit status 2 (tracebacks with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = bool(kwargs.get("debug", False))
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except (N3Error, ValueError, OSError) as exc:
            if debug:
                raise
            raise fail(_one_line(exc)) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def is_tty() -> bool:
    return sys.stderr.isatty()
