"""`n3 denoise`: parsing and messages; the work is :func:`n3cli.api.denoise`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from .. import api
from ..errors import N3Error
from ..imaging.io import Image, read_image
from ..imaging.metrics import psnr, ssim
from .common import (
    BitDepthOpt,
    RunOptions,
    err_console,
    handle_errors,
    parse_nlf,
    parse_sigma,
    with_run_options,
)
from .pipeline import Job, check_reference_size, make_options, plan_jobs, report_nothing_to_do, run_jobs, screen_jobs

EPILOG = """Examples:

  n3 denoise photo.jpg                      (writes photo_n3.jpg)

  n3 denoise photo.png --sigma 25 -o clean.png

  n3 denoise scans/ -o denoised/ --sigma auto --json

  n3 denoise noisy.png --sigma 50 --reference clean.png
"""


@handle_errors
@with_run_options
def denoise_cmd(
    inputs: Annotated[list[Path], typer.Argument(help="Image files or folders.", show_default=False)],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Output file, or folder for several "
                                                "inputs (default: <stem>_n3.<ext> beside each input).")] = None,
    sigma: Annotated[str | None, typer.Option(help="Noise σ on the 0-255 scale (at most "
                                              f"{api.SIGMA_LIMIT:g}), or 'auto': estimated from each image, or "
                                              "inferred by the colour model for camera photos (see above).",
                                              show_default="auto")] = None,
    nlf: Annotated[str | None, typer.Option(help="Noise level function 'a,b' (σ² = a·x + b, x in [0,1]) "
                                            "instead of --sigma.")] = None,
    weights: Annotated[str | None, typer.Option(help="Shipped model name or weights file "
                                                "(.safetensors, or an authors' .t7 checkpoint).")] = None,
    color: Annotated[str, typer.Option(help="Colour images: 'opponent' (luma and two chroma channels, each with its "
                                       "own noise level, as CBM3D), 'rgb' (channel by channel), or 'auto' (camera "
                                       "photos given no σ: the colour model, one pass; else opponent with a "
                                       "noise-level-conditional model, rgb with others).")
                     ] = "auto",
    reference: Annotated[Path | None, typer.Option(help="Clean image (or folder) to report PSNR/SSIM.")] = None,
    bit_depth: BitDepthOpt = None,
    *,
    run: RunOptions,
) -> None:
    """Remove noise from photos and scans (gray or colour).

    Given no --sigma, a colour photo whose fine-scale noise is low (camera noise: coarse, demosaicked, compressed)
    goes to the colour model n3net-color, which infers the noise itself in one pass; other images get a σ
    estimated from the image. A σ given by hand decides how much is removed (gray model, opponent colour)."""
    sigma_value = parse_sigma(sigma)
    nlf_value = parse_nlf(nlf)
    if nlf_value is not None and sigma is not None:
        raise N3Error("give either --sigma or --nlf, not both")
    if color not in api.COLOR_MODES:
        raise N3Error(f"--color must be one of {', '.join(api.COLOR_MODES)}, got {color!r}")
    opts = make_options(run, bit_depth=bit_depth)
    jobs, early = screen_jobs(*plan_jobs(inputs, output, reference, opts), opts,
                              check_reference_size)
    if not jobs:  # fail before loading a model
        raise typer.Exit(report_nothing_to_do(early, opts))
    restorers: dict[str, api.Restorer] = {}
    announced: set[str] = set()

    def restorer_for(task: str, announce: bool = True) -> api.Restorer:
        """The model of a registry task (or the one given), loaded once and announced when first used."""
        if task not in restorers:
            restorer = api.load_model(weights, task, run.device, self_ensemble=run.ensemble,
                                      precision=run.precision)
            same = [r for r in restorers.values() if r.name == restorer.name]
            restorers[task] = same[0] if same else restorer
        restorer = restorers[task]
        if announce and restorer.name not in announced and not run.quiet:
            announced.add(restorer.name)
            info = restorer.info
            note = "" if info.conditional else f" (trained for sigma {info.sigma:g} only)" if info.sigma else ""
            err_console.print(f"model {restorer.describe()}{note}", highlight=False)
        return restorer

    # refuses impossible combinations first
    api.color_mode(restorer_for("denoise", announce=False).info, 3, color, nlf_value)
    warned: set[str] = set()  # a note on given noise levels is printed once, not per image
    names = {"opponent": " (luma/red-blue/green-magenta)", "rgb": " (R/G/B)"}

    def process(img: Image, on_tile: Any) -> tuple[np.ndarray, dict[str, Any]]:
        choice = api.choose_denoiser(img.pixels, weights, sigma_value, nlf_value, color)
        restorer = restorer_for(choice.task)
        plan = api.plan_denoise(img.pixels, restorer.info, sigma_value, nlf=nlf_value, color=color)
        if plan.blind and not run.quiet and not run.json_out:
            why = f"; {choice.reason}" if choice.reason else ""
            err_console.print(f"{img.path}: noise level inferred by {restorer.name} (blind{why})", highlight=False)
        if plan.estimated and plan.sigmas is not None and not run.quiet and not run.json_out:
            shown = "/".join(f"{v:.1f}" for v in plan.sigmas) + names.get(plan.mode, "")
            err_console.print(f"{img.path}: estimated sigma {shown}", highlight=False)
        for note in plan.notes:
            if plan.estimated or note not in warned:
                warned.add(note)
                where = f"{img.path}: " if plan.estimated else ""
                err_console.print(f"[yellow]warning:[/] {where}{note}", highlight=False)
        out = api.denoise(img.pixels, model=restorer, tile=run.tile, overlap=run.tile_overlap, progress=on_tile,
                          plan=plan)
        facts: dict[str, Any] = {"nlf": list(plan.nlf)} if plan.nlf is not None else {"sigma": list(plan.sigmas or ())}
        return out, {**facts, "color": plan.mode, "model": restorer.name, "blind": plan.blind}

    def score(job: Job, img: Image, out: Image) -> dict[str, Any]:
        ref = read_image(job.reference, max_pixels=opts.max_pixels).pixels
        if ref.shape != img.pixels.shape:
            kinds = {1: "gray", 3: "colour"}
            got, want = ref.shape, img.pixels.shape
            raise N3Error(f"{job.reference}: reference is {got[1]}x{got[0]} {kinds.get(got[2], got[2])}, the input "
                          f"is {want[1]}x{want[0]} {kinds.get(want[2], want[2])}")
        return {"psnr_in": psnr(img.pixels, ref), "psnr_out": psnr(out.pixels, ref),
                "ssim_out": ssim(out.pixels, ref)}

    code = run_jobs(jobs, early, opts, process, score if reference is not None else None)
    raise typer.Exit(code)
