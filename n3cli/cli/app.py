"""The `n3` command: a thin Typer layer over the Python API."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import torch
import typer
from typer.core import TyperGroup

from .. import __version__
from ..devices import keep_freed_memory
from .bench import EPILOG as BENCH_EPILOG
from .bench import bench_cmd, data_app
from .denoise import EPILOG as DENOISE_EPILOG
from .denoise import denoise_cmd
from .raw import EPILOG as RAW_EPILOG
from .raw import raw_denoise_cmd
from .sets import sets_cmd
from .sr import EPILOG as SR_EPILOG
from .sr import sr_cmd
from .train import CONTEXT as TRAIN_CONTEXT
from .train import EPILOG as TRAIN_EPILOG
from .train import train_cmd
from .weights import weights_app

ROOT_EPILOG = """Examples:

  n3 denoise photo.png -o clean.png

  n3 raw-denoise img.dng -o clean.tif

  n3 sr low.png --scale 3

  n3 bench --dataset Set12 --sigma 25 --methods n3net,bm3d

Run 'n3 COMMAND --help' for the options and examples of each command.
"""

#: Click's base exception (usage errors, bad option values), reached through a public Typer class.
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _interrupted_said() -> bool:
    """Whether a command's own handler already said 'interrupted' (it exits 130 after saying so)."""
    from .common import INTERRUPTED

    return INTERRUPTED.is_set()


class _OneLineUsageErrors(TyperGroup):
    """Usage errors (unknown option, '--tile abc') as one line on stderr and exit status 2, like every other
    bad input, instead of Click's usage block."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
            if code == 130 and not _interrupted_said():  # Ctrl-C while Click still parsed (Typer's Exit(130))
                print("interrupted", file=sys.stderr)
        except _ClickException as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # 'n3' or 'n3 weights' alone: the help, as --help
                print(exc.format_message())
                sys.exit(0)
            ctx = getattr(exc, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            print(f"error: {exc.format_message()}{hint}", file=sys.stderr)
            sys.exit(exc.exit_code)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="n3",
    cls=_OneLineUsageErrors,
    help="Image restoration with Neural Nearest Neighbors Networks (N3Net, Plötz & Roth, NeurIPS 2018).",
    epilog=ROOT_EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: flags without a '<bool>' metavar
)
app.command("denoise", epilog=DENOISE_EPILOG)(denoise_cmd)
app.command("raw-denoise", epilog=RAW_EPILOG)(raw_denoise_cmd)
app.command("sr", epilog=SR_EPILOG)(sr_cmd)
app.command("train", context_settings=TRAIN_CONTEXT, epilog=TRAIN_EPILOG)(train_cmd)
app.add_typer(weights_app, name="weights")
app.command("sets")(sets_cmd)
app.command("bench", epilog=BENCH_EPILOG)(bench_cmd)
app.add_typer(data_app, name="data")


def _version(value: bool) -> None:
    if value:
        print(f"n3 {__version__} (torch {torch.__version__})")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """Image restoration with Neural Nearest Neighbors Networks (N3Net, NeurIPS 2018)."""


def main() -> None:
    keep_freed_memory()  # layer outputs reuse freed memory instead of fresh pages: inference ~20 % faster
    app()
