"""`n3 raw-denoise`: parsing and messages; the work is :func:`n3cli.api.denoise_mosaic` and :mod:`n3cli.raw`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from .. import api
from ..atomic import staged
from ..errors import N3Error
from ..imaging.io import DEFAULT_MAX_PIXELS, FORMAT_OF_EXTENSION, write_image
from ..raw import RawImage, develop, read_raw, write_dng
from .common import (
    RunOptions,
    check_tile,
    err_console,
    handle_errors,
    is_tty,
    out_console,
    parse_nlf,
    with_run_options,
)
from .devices import set_threads
from .pipeline import check_target
from .progress import ProgressDisplay

EPILOG = """Examples:

  n3 raw-denoise IMG_0042.dng -o IMG_0042.png

  n3 raw-denoise shot.cr2 -o shot.tif --bit-depth 16 --compare --dng shot_denoised.dng

  n3 raw-denoise shot.nef -o shot.jpg --nlf 5.2e-4,1.1e-6 --json
"""

SOURCE_TEXT = {"given": "--nlf", "dng": "the DNG NoiseProfile tag", "estimated": "estimated from the image"}


def plan_outputs(inp: Path, output: Path, dng: Path | None, compare: bool, bits: int, force: bool
                 ) -> tuple[Path | None, list[Path]]:
    """The comparison image's path (or None) and every path to be written, all checked up front."""
    suffix = output.suffix.lower()
    if suffix not in FORMAT_OF_EXTENSION:
        raise N3Error(f"{output}: unknown output format {output.suffix or '(no extension)'!r}; "
                      f"use one of {', '.join(sorted(set(FORMAT_OF_EXTENSION)))}")
    if bits not in (8, 16):
        raise N3Error(f"--bit-depth must be 8 or 16 for developed raws, got {bits}")
    if bits == 16 and FORMAT_OF_EXTENSION[suffix] not in ("PNG", "TIFF"):
        raise N3Error(f"{output}: --bit-depth 16 needs a PNG or TIFF output")
    original = output.with_name(f"{output.stem}_original{output.suffix}") if compare else None
    if dng is not None and dng.suffix.lower() != ".dng":
        raise N3Error(f"{dng}: --dng needs a file name ending in .dng")
    targets = [p for p in (output, original, dng) if p is not None]
    for p, what in zip(targets, ("the output", "the comparison image" if compare else "the DNG", "the DNG"),
                       strict=False):
        check_target(p, inp, force, what)
    return original, targets


def _as_float(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32) / np.float32(np.iinfo(rgb.dtype).max)


@handle_errors
@with_run_options
def raw_denoise_cmd(
    input: Annotated[Path, typer.Argument(help="Camera raw file (DNG, CR2, NEF, ARW, ...; Bayer sensors).",
                                          show_default=False)],
    output: Annotated[Path, typer.Option("-o", "--output", help="Developed, denoised image (.png, .tif, .jpg).",
                                         show_default=False)],
    dng: Annotated[Path | None, typer.Option(help="Also write the denoised mosaic as a DNG.")] = None,
    nlf: Annotated[str | None, typer.Option(
        help="Noise level function 'a,b': variance a·x + b, a = variance per unit signal, b = signal-independent "
             "variance, both for values x normalised to [0,1] between black and white level; e.g. --nlf "
             "1e-4,1e-6 gives σ ≈ 0.0071 at mid-grey. Default: the DNG NoiseProfile, else estimated.")] = None,
    compare: Annotated[bool, typer.Option("--compare", help="Also write <output stem>_original.<ext>: the "
                                          "untouched raw developed the same way.")] = False,
    bits: Annotated[int, typer.Option("--bit-depth", "--bits", help="Bits per sample of the developed image(s): "
                                      "8 or 16.")] = 8,
    weights: Annotated[str | None, typer.Option(help="Noise-level-conditional model: shipped name or "
                                                ".safetensors file (default: the shipped raw model, else "
                                                "the shipped denoiser).")] = None,
    cfa: Annotated[str, typer.Option(help="planes (the 4 CFA planes as gray images) or mosaic.",
                                     hidden=True)] = api.DEFAULT_CFA,
    *,
    run: RunOptions,
) -> None:
    """Denoise a camera raw with its noise level function (NLF), then develop it with LibRaw.

    NLF: --nlf, else the DNG NoiseProfile tag, else estimated from the image. Each CFA plane is denoised as gray.

    Development: camera white balance, AHD demosaic, no auto-brightening, the raw's default crop; --compare develops
    the original the same way. --tile counts pixels of the half-size CFA planes.

    --nlf from sensor data: gain g e-/DN, white - black = R DN, read noise r DN: a = 1/(g·R), b = (r/R)².

    E.g. g = 0.5, R = 3840 (12 bit), r = 4 DN: --nlf 5.2e-4,1.1e-6 (σ ≈ 0.016 at mid-grey).
    """
    nlf_value = parse_nlf(nlf)
    check_tile(run.tile, run.tile_overlap)
    if cfa not in api.CFA_MODES:
        raise N3Error(f"--cfa must be one of {', '.join(api.CFA_MODES)}, got {cfa!r}")
    original_path, targets = plan_outputs(input, output, dng, compare, bits, run.force)
    set_threads(run.threads)
    t0 = time.perf_counter()
    raw = _read(input, run.allow_large)
    restorer = api.load_raw_model(weights, run.device, self_ensemble=run.ensemble, precision=run.precision)
    info = api.raw_nlf(raw, nlf_value)
    if not run.quiet:
        _describe(raw, restorer, info)
    with ProgressDisplay(err_console, 1, enabled=not run.quiet) as progress:
        progress.start(str(input))
        t1 = time.perf_counter()
        clean = api.denoise_mosaic(raw.mosaic, raw.pattern, (info.a, info.b), model=restorer, cfa=cfa, tile=run.tile,
                                   overlap=run.tile_overlap, progress=progress.work)
        denoise_seconds = time.perf_counter() - t1
        progress.finish()
    written = _develop_and_write(raw, clean, output, original_path, dng, bits, run.force, targets)
    h, w = raw.shape
    record: dict[str, Any] = {
        "input": str(input), "output": str(output), "original": str(original_path) if original_path else None,
        "dng": str(dng) if dng else None, "nlf": [info.a, info.b], "nlf_source": info.source,
        "sigma_mid": info.sigma(), "model": restorer.name, "device": str(restorer.device), "cfa": cfa,
        "width": w, "height": h, "bits": bits, "denoise_seconds": round(denoise_seconds, 3),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if run.json_out:
        out_console.print_json(json.dumps(record)) if is_tty() else print(json.dumps(record), flush=True)
    elif not run.quiet:
        err_console.print(f"wrote {', '.join(str(p) for p in written)} ({record['seconds']:.1f} s)", highlight=False)


def _read(path: Path, allow_large: bool) -> RawImage:
    """The raw, refused over the megapixel guard unless ``allow_large``."""
    raw = read_raw(path)
    if not allow_large and raw.mosaic.size > DEFAULT_MAX_PIXELS:
        raise N3Error(f"{path}: {raw.shape[1]}x{raw.shape[0]} is over {DEFAULT_MAX_PIXELS / 1e6:.4g} megapixels "
                      "(use --allow-large)")
    return raw


def _describe(raw: RawImage, restorer: api.Restorer, info: api.NLFInfo) -> None:
    """What is about to happen: the mosaic, the model, the NLF and where it came from, a noise warning."""
    h, w = raw.shape
    err_console.print(f"{raw.path}: {w}x{h} {raw.pattern} mosaic; model {restorer.describe()}", highlight=False)
    err_console.print(f"NLF ({SOURCE_TEXT[info.source]}): a={info.a:.3g}, b={info.b:.3g}; "
                      f"σ at mid-grey {info.sigma():.4f} ({100 * info.sigma():.2f}% of white)", highlight=False)
    for warning in (info.note or None, api.untrained_noise_note(restorer.info, nlf=(info.a, info.b))):
        if warning is not None:
            err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)


def _develop_and_write(raw: RawImage, clean: np.ndarray, output: Path, original: Path | None, dng: Path | None,
                       bits: int, force: bool, targets: list[Path]) -> list[Path]:
    """Develop the denoised (and with --compare the untouched) mosaic and write every output: all or nothing, so a
    failed write leaves every target as it was, also a file ``--force`` would have replaced."""
    settings: dict[str, Any] = {"no_auto_bright": True}
    developed = develop(raw, clean, bits=bits, **settings)
    before = develop(raw, None, bits=bits, **settings) if original is not None else None
    writers = {output: lambda p: write_image(p, _as_float(developed), bit_depth=bits, overwrite=True)}
    if original is not None and before is not None:
        writers[original] = lambda p: write_image(p, _as_float(before), bit_depth=bits, overwrite=True)
    if dng is not None:
        writers[dng] = lambda p: write_dng(p, raw, clean, overwrite=True)
    try:
        with staged(targets, overwrite=force) as paths:
            for target, path in zip(targets, paths, strict=True):
                try:
                    writers[target](path)
                except N3Error as e:  # name the output, not its temporary file
                    raise N3Error(str(e).replace(str(path), str(target))) from None
    except FileExistsError as e:  # appeared while this run worked
        raise N3Error(f"{e.filename}: already exists") from None
    except OSError as e:  # a temporary file that cannot be made, or a move refused by the file system
        raise N3Error(f"cannot write the outputs ({e.strerror or e}{f': {e.filename}' if e.filename else ''})"
                      ) from None
    return targets
