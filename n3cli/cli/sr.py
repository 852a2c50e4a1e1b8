"""`n3 sr`: parsing and messages; the work is :func:`n3cli.api.super_resolve`."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from .. import api
from ..errors import N3Error
from ..imaging.io import Image, image_size, read_image
from ..imaging.metrics import sr_metrics
from ..imaging.resize import imresize_np
from .common import (
    BitDepthOpt,
    RunOptions,
    err_console,
    handle_errors,
    with_run_options,
)
from .pipeline import Job, make_options, plan_jobs, report_nothing_to_do, run_jobs, screen_jobs

EPILOG = """Examples:

  n3 sr photo.png --scale 2 -o photo_big.png

  n3 sr thumbnails/ --scale 4 -o upscaled/ --json

  n3 sr lr.png --scale 3 --reference hr.png
"""


def parse_scale(text: str) -> int:
    """'2' / '3' / '4' → int; other integers up to api.MAX_SCALE are accepted (untrained, warned about)."""
    try:
        return api.check_scale(text.strip())
    except N3Error as exc:
        raise N3Error(f"--{exc}") from None


def _alpha_float(alpha: np.ndarray) -> np.ndarray:
    if np.issubdtype(alpha.dtype, np.integer):
        return alpha.astype(np.float32) / np.float32(np.iinfo(alpha.dtype).max)
    return alpha.astype(np.float32, copy=False)


def _crop_to_scale(ref: np.ndarray, scale: int) -> np.ndarray:
    return ref[: ref.shape[0] - ref.shape[0] % scale, : ref.shape[1] - ref.shape[1] % scale]


def _check_job(job: Job, size: tuple[int, int], scale: int, max_pixels: int | None) -> None:
    """Before any work: the output's size against the megapixel guard, the reference's size."""
    w, h = size
    s = scale
    if max_pixels is not None and w * h * s * s > max_pixels:
        raise N3Error(f"{job.input}: the ×{s} output would be {w * s}x{h * s} ({w * h * s * s / 1e6:.4g} "
                      f"megapixels), above the limit of {max_pixels / 1e6:.4g} (use --allow-large)")
    if job.reference is not None:
        rw, rh = image_size(job.reference)
        if (rw - rw % s, rh - rh % s) != (w * s, h * s):
            raise N3Error(f"{job.reference}: reference is {rw}x{rh}, the ×{s} output will be {w * s}x{h * s}")


@handle_errors
@with_run_options
def sr_cmd(
    inputs: Annotated[list[Path], typer.Argument(help="Image files or folders.", show_default=False)],
    scale: Annotated[str, typer.Option(help="Upscaling factor: 2, 3 or 4 (the trained scales); 5 to 8 run with a "
                                             "warning.", show_default=False)],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Output file, or folder for several "
                                                "inputs (default: <stem>_x<scale>.<ext> beside each input).")
                      ] = None,
    weights: Annotated[str | None, typer.Option(help="Shipped SR model name or weights file (.safetensors).")
                       ] = None,
    reference: Annotated[Path | None, typer.Option(help="High-resolution image (or folder) to report PSNR/SSIM "
                                                   "on Y with the SR protocol.")] = None,
    bit_depth: BitDepthOpt = None,
    *,
    run: RunOptions,
) -> None:
    """Upscale photos ×2, ×3 or ×4 (single-image super-resolution; colour: the network restores the luma)."""
    s = parse_scale(scale)
    opts = make_options(run, bit_depth=bit_depth, suffix=f"_x{s}", min_side=-(-api.MIN_SIDE // s))
    jobs, early = screen_jobs(*plan_jobs(inputs, output, reference, opts), opts,
                              functools.partial(_check_job, scale=s, max_pixels=opts.max_pixels))
    if not jobs:  # fail before loading a model
        raise typer.Exit(report_nothing_to_do(early, opts))
    restorer = api.load_model(weights, "sr", run.device, self_ensemble=run.ensemble, precision=run.precision)
    note = api.untrained_scale_note(s)
    if note is not None:
        err_console.print(f"[yellow]warning:[/] {note}", highlight=False)
    if not run.quiet:
        err_console.print(f"model {restorer.describe()}", highlight=False)
    references = {job.input: job.reference for job in jobs if job.reference is not None}
    hr: dict[Path, np.ndarray] = {}

    def load_reference(img: Image) -> None:
        """Read the HR reference and check its size before any work (cropped to a multiple of the scale)."""
        if img.path is None or img.path not in references:
            return
        path = references[img.path]
        ref = _crop_to_scale(read_image(path, max_pixels=opts.max_pixels).pixels, s)
        want = (img.height * s, img.width * s)
        if ref.shape[:2] != want:
            raise N3Error(f"{path}: reference is {ref.shape[1]}x{ref.shape[0]} (cropped to a multiple of {s}), "
                          f"the ×{s} output is {want[1]}x{want[0]}")
        if ref.shape[2] != img.channels:
            kinds = {1: "gray", 3: "colour"}
            raise N3Error(f"{path}: reference is {kinds[ref.shape[2]]}, the input is {kinds[img.channels]}")
        hr[img.path] = ref

    def process(img: Image, on_tile: Any) -> tuple[np.ndarray, dict[str, Any]]:
        load_reference(img)
        pixels = img.pixels
        if img.alpha is not None:
            pixels = np.concatenate([pixels, _alpha_float(img.alpha)[:, :, None]], axis=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the untrained-scale note is printed once above
            out = api.super_resolve(pixels, s, model=restorer, tile=run.tile, overlap=run.tile_overlap,
                                    progress=on_tile)
        return out, {"scale": s}

    def score(job: Job, img: Image, out: Image) -> dict[str, Any]:
        ref = hr.pop(job.input)
        try:
            p, q = sr_metrics(out.pixels, ref, s)
            bicubic = imresize_np(img.pixels.astype(np.float64), float(s))
            p_bic, _ = sr_metrics(bicubic, ref, s)
        except ValueError as exc:  # e.g. too small to crop the border
            raise N3Error(f"{job.reference}: {exc}") from None
        return {"psnr_bicubic": p_bic, "psnr_out": p, "ssim_out": q}

    code = run_jobs(jobs, early, opts, process, score if reference is not None else None)
    raise typer.Exit(code)
