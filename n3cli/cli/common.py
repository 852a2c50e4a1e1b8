"""What every subcommand shares: error handling, console, and the options of the image commands."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from .. import api
from ..errors import N3Error
from ..imaging.io import DEFAULT_MAX_PIXELS

F = TypeVar("F", bound=Callable[..., Any])

#: Messages and progress go to stderr; stdout is kept for machine-readable output (--json).
#: In logs and pipes (not a terminal) tables get a generous width instead of rich's 80 columns.
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
out_console = Console(width=None if sys.stdout.isatty() else 160)

#: Set once a command has said 'interrupted' (Ctrl-C), so that nothing says it twice.
INTERRUPTED = threading.Event()

EXIT_BAD_INPUT = 2
EXIT_PARTIAL = 1

#: What a CLI user can do about an error whose remedy is a setting (:attr:`N3Error.about`, the library's parameter
#: name): library messages speak of values, the CLI names its flags.
FLAG_HINTS = {
    "max_pixels": "use --allow-large to read it anyway",
    "overwrite": "use --force to replace it",
    "weights": "pass --weights FILE",
    "export": "n3 weights export RUN/last.pt -o NAME.safetensors --name NAME",
    "data_dir": "--data-dir DIR",
    "color": "use --color rgb",
    "nlf": "give it with --nlf a,b",
}

#: Where shipped weights and their figures are recorded: a release step from a repository checkout.
RELEASE_STEP = ("register shipped weights and their figures with python benchmarks/release_weights.py "
                "from a repository checkout")


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
            raise fail(error_line(exc)) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            INTERRUPTED.set()
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def error_line(exc: BaseException) -> str:
    """The one-line message of an error, with the flag that lifts it (:data:`FLAG_HINTS`) for a CLI user."""
    text = (str(exc).strip() or type(exc).__name__).splitlines()[0]
    hint = FLAG_HINTS.get(getattr(exc, "about", None) or "")
    return f"{text} ({hint})" if hint else text


def is_tty() -> bool:
    return sys.stderr.isatty()


# --- options shared by the image commands (n3 denoise, n3 sr) -------------------------------------

DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")]
PrecisionOpt = Annotated[str, typer.Option(help="Arithmetic of the convolutions: auto (by device and CPU features), "
                                           "fp32, bf16 (CPUs with AVX512-BF16/AMX, CUDA) or fp16 (CUDA); the N3 "
                                           "blocks always compute in float32.")]
TileOpt = Annotated[int | None, typer.Option(help="Tile size in pixels (default: from free memory).")]
TileOverlapOpt = Annotated[int, typer.Option(help="Overlap of neighbouring tiles (more than half a tile less one "
                                                "is cut to that).")]
EnsembleOpt = Annotated[bool, typer.Option("--ensemble", help="Average the model over the 8 flips and rotations "
                                           "of the input (self-ensemble): 8x slower, slightly more accurate.")]
BitDepthOpt = Annotated[int | None, typer.Option(help="Output bit depth (default: the input's).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON record per image on stdout.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite existing outputs.")]
AllowLargeOpt = Annotated[bool, typer.Option("--allow-large", help="Decode images over "
                                             f"{DEFAULT_MAX_PIXELS // 1_000_000} megapixels.")]
ThreadsOpt = Annotated[int | None, typer.Option(help="CPU threads (default: $OMP_NUM_THREADS, else the cores this "
                                               "process may run on).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summary lines.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks.")]


def check_tile(tile: int | None, overlap: int) -> None:
    """--tile at least 32 pixels, --tile-overlap non-negative."""
    if tile is not None and tile < 32:
        raise N3Error(f"--tile must be at least 32 pixels, got {tile}")
    if overlap < 0:
        raise N3Error(f"--tile-overlap must be >= 0, got {overlap}")


def check_bit_depth(bit_depth: int | None) -> None:
    if bit_depth is not None and bit_depth not in (8, 16, 32):
        raise N3Error(f"--bit-depth must be 8, 16 or 32, got {bit_depth}")


def parse_sigma(text: str | None) -> float | None:
    """'auto' / None → None (estimate); otherwise a non-negative number on the 0-255 scale."""
    if text is None or text.strip().lower() == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise N3Error(f"--sigma must be a number on the 0-255 scale or 'auto', got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise N3Error(f"--sigma must be a non-negative number, got {text!r}")
    try:
        return api.check_sigma_value(value)
    except N3Error as exc:
        raise N3Error(f"--{exc}") from None


def parse_nlf(text: str | None) -> tuple[float, float] | None:
    """'a,b' → (a, b) in normalised [0, 1] units (σ²(x) = a·x + b)."""
    if text is None:
        return None
    parts = text.replace(" ", "").split(",")
    try:
        a, b = (float(p) for p in parts)
    except ValueError:
        raise N3Error(f"--nlf must be two numbers 'a,b' (variance a·x + b), got {text!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)) or a < 0 or b < 0:
        raise N3Error(f"--nlf values must be finite and non-negative, got {text!r}")
    try:
        return api.check_nlf((a, b))
    except N3Error as exc:
        raise N3Error(f"--{exc}") from None


# --- the options every image command shares, defined once ---------------------------------------------------------

@dataclass(frozen=True)
class RunOptions:
    """How an image command runs, whatever it computes (the same flags on denoise, sr and raw-denoise)."""

    device: str = "auto"
    precision: str = "auto"
    tile: int | None = None
    tile_overlap: int = api.DEFAULT_OVERLAP
    ensemble: bool = False
    threads: int | None = None
    force: bool = False
    allow_large: bool = False
    json_out: bool = False
    quiet: bool = False
    debug: bool = False


_RUN_OPTION_TYPES: dict[str, Any] = {
    "device": DeviceOpt, "precision": PrecisionOpt, "tile": TileOpt, "tile_overlap": TileOverlapOpt,
    "ensemble": EnsembleOpt, "threads": ThreadsOpt, "force": ForceOpt, "allow_large": AllowLargeOpt,
    "json_out": JsonOpt, "quiet": QuietOpt, "debug": DebugOpt,
}


def with_run_options(fn: F) -> F:
    """Give a command the shared options (:class:`RunOptions`) as flags; it receives them as ``run``."""
    sig = inspect.signature(fn, eval_str=True)
    own = [p for p in sig.parameters.values() if p.name != "run"]
    shared = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=_RUN_OPTION_TYPES[f.name],
                                default=f.default) for f in dataclasses.fields(RunOptions)]

    def command(**kwargs: Any) -> Any:
        run = RunOptions(**{name: kwargs.pop(name) for name in _RUN_OPTION_TYPES})
        return fn(run=run, **kwargs)

    command.__name__, command.__doc__, command.__module__ = fn.__name__, fn.__doc__, fn.__module__
    command.__signature__ = sig.replace(parameters=own + shared)  # type: ignore[attr-defined]
    return command  # type: ignore[return-value]
