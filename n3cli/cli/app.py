"""The `n3` command: a thin Typer layer over the Python API."""

from __future__ import annotations

from typing import Annotated

import torch
import typer

from .. import __version__
from ..sets.cli import sets_cmd
from .bench import EPILOG as BENCH_EPILOG
from .bench import bench_cmd, data_app
from .denoise import EPILOG as DENOISE_EPILOG
from .denoise import denoise_cmd
from .raw import EPILOG as RAW_EPILOG
from .raw import raw_denoise_cmd
from .sr import EPILOG as SR_EPILOG
from .sr import sr_cmd
from .train import train_cmd
from .weights import weights_app

ROOT_EPILOG = """Examples:

  n3 denoise photo.png -o clean.png

  n3 raw-denoise img.dng -o clean.tif

  n3 sr low.png --scale 3

  n3 bench --dataset Set12 --sigma 25 --methods n3net,bm3d

Run 'n3 COMMAND --help' for the options and examples of each command.
"""

app = typer.Typer(
    name="n3",
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
app.command("train")(train_cmd)
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
    app()
