"""The file loop every image subcommand shares: inputs → outputs, checks, progress, JSON, exit codes.

A subcommand supplies ``process(image, progress) -> pixels`` and optional reference scoring; this
module does the rest, identically for ``denoise`` and ``sr``:
file ──read──▶ array + metadata ──process──▶ array ──write (atomic)──▶ file.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..api import MIN_SIDE
from ..errors import N3Error
from ..imaging.io import (
    BIT_DEPTHS,
    DEFAULT_MAX_PIXELS,
    FORMAT_OF_EXTENSION,
    Image,
    image_size,
    list_images,
    read_image,
    write_image,
)
from .common import (
    EXIT_BAD_INPUT,
    EXIT_PARTIAL,
    RunOptions,
    check_bit_depth,
    check_tile,
    err_console,
    error_line,
    out_console,
)
from .devices import set_threads
from .progress import ProgressDisplay

TileProgress = Callable[[float, int], None]


@dataclass
class Job:
    """One input file and where its result goes."""

    input: Path
    output: Path
    reference: Path | None = None


@dataclass(frozen=True)
class Failure:
    """An input (a file, or a folder that could not be listed) that could not be processed, and the one-line
    message."""

    input: str
    message: str


def _failure(exc: N3Error, inp: str | os.PathLike[str], name_it: bool = False) -> Failure:
    """``name_it``: put the input's path in front of a message that does not start with it (the library's
    messages about pixels name no file)."""
    line = error_line(exc)
    return Failure(str(inp), f"{inp}: {line}" if name_it and not line.startswith(str(inp)) else line)


@dataclass
class Options:
    force: bool = False
    quiet: bool = False
    json: bool = False
    max_pixels: int | None = None
    bit_depth: int | None = None
    suffix: str = "_n3"
    min_side: int = MIN_SIDE  # smallest input side (SR: the output's side counts)
    debug: bool = False  # each failed input's traceback too
    created: list[Path] = field(default_factory=list)  # output folders this run made (removed again if unused)


def make_options(run: RunOptions, *, bit_depth: int | None, suffix: str = "_n3", min_side: int = MIN_SIDE) -> Options:
    """Check the options every image command shares, set the threads, and bundle what the file loop needs."""
    check_tile(run.tile, run.tile_overlap)
    check_bit_depth(bit_depth)
    set_threads(run.threads)
    return Options(force=run.force, quiet=run.quiet, json=run.json_out, bit_depth=bit_depth, suffix=suffix,
                   min_side=min_side, max_pixels=None if run.allow_large else DEFAULT_MAX_PIXELS, debug=run.debug)


def _expand(inputs: Sequence[Path], suffix: str) -> tuple[list[Path], list[Failure], int]:
    """Images of all inputs (each file once), one error line per input that could not be expanded, and how many
    earlier outputs were left out of folders (:func:`_earlier_outputs`)."""
    files: list[Path] = []
    errors: list[Failure] = []
    seen: set[Path] = set()
    skipped = 0
    for item in inputs:
        try:
            found = list_images([item])
        except N3Error as exc:
            if all(f.input != str(item) for f in errors):  # (an input given twice is reported once)
                errors.append(_failure(exc, item))
            continue
        if Path(item).is_dir():
            earlier = _earlier_outputs(found, suffix)
            skipped += len(earlier)
            found = [f for f in found if f not in earlier]
        for f in found:
            if f.resolve() not in seen:
                seen.add(f.resolve())
                files.append(f)
    return files, errors, skipped


def _earlier_outputs(files: list[Path], suffix: str) -> set[Path]:
    """Files of one folder named as the output of another file there (``photo_n3.png`` beside ``photo.png``):
    the results of an earlier run, not inputs of this one."""
    outputs = {f"{f.stem}{suffix}{f.suffix}" for f in files} if suffix else set()
    return {f for f in files if f.name in outputs}


def plan_jobs(inputs: Sequence[Path], output: Path | None, reference: Path | None, opts: Options
              ) -> tuple[list[Job], list[Failure]]:
    """Decide every output path before any work, so that clashes are reported up front.

    ``-o`` names a folder when several inputs are given (or a folder), whether or not each of them turns out to be
    readable; a file otherwise. Two inputs that would write one output, or an output that is another input, stop
    the run before any work (also with --force)."""
    files, errors, skipped = _expand(inputs, opts.suffix)
    if skipped and not opts.quiet:
        err_console.print(f"note: left out {skipped} earlier output{'s' if skipped > 1 else ''} (*{opts.suffix}.*) "
                          "found beside their inputs in the folder(s); name them as files to process them",
                          highlight=False)
    several = len({Path(i).resolve() for i in inputs}) > 1 or any(Path(i).is_dir() for i in inputs)
    jobs: list[Job] = []
    new_folder = output is not None and several and not output.exists()
    if output is not None and several:
        if output.exists() and not output.is_dir():
            raise N3Error(f"{output}: with several inputs -o must name a folder")
        if new_folder and output.suffix.lower() in FORMAT_OF_EXTENSION:
            raise N3Error(f"{output}: with several inputs -o must name a folder, not an image file")
        if new_folder and not output.parent.exists():
            raise N3Error(f"{output.parent}: output folder does not exist")
    for f in files:
        if output is None:
            out = f.with_name(f"{f.stem}{opts.suffix}{f.suffix}")
        elif several or output.is_dir():
            out = output / f"{f.stem}{opts.suffix}{f.suffix}"
        else:
            out = output
        ref = None
        if reference is not None:
            ref = reference / f.name if reference.is_dir() else reference
            if not ref.exists():
                raise N3Error(f"{ref}: reference image not found")
        jobs.append(Job(f, out, ref))
    if reference is not None and reference.is_file() and len(jobs) > 1:
        raise N3Error("--reference FILE needs a single input; give a folder of references for several")
    _check_clashes(jobs)
    if new_folder and output is not None:
        output.mkdir()
        opts.created.append(output)
    return jobs, errors


def _remove_unused_folders(opts: Options) -> None:
    """Output folders this run created, removed again when nothing was written into them."""
    for folder in opts.created:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if empty


def _check_clashes(jobs: list[Job]) -> None:
    """Refuse a run in which two inputs would write one output, or an output would replace another input."""
    writers: dict[Path, Path] = {}
    inputs = {job.input.resolve(): job.input for job in jobs}
    for job in jobs:
        key = job.output.resolve()
        if key in writers:
            raise N3Error(f"{writers[key]} and {job.input} would both be written to {job.output}; "
                          "give them separate output folders")
        writers[key] = job.input
        if key in inputs and key != job.input.resolve():
            raise N3Error(f"{job.output}: the output of {job.input} is also an input of this run")


def check_output(job: Job, opts: Options) -> None:
    """Refuse before computing: same file as the input, an existing file, a missing or unwritable folder."""
    out, inp = job.output, job.input
    fmt = FORMAT_OF_EXTENSION.get(out.suffix.lower())
    if fmt is None:
        raise N3Error(f"{out}: unknown output format {out.suffix or '(no extension)'!r}; "
                      f"use one of {', '.join(sorted(set(FORMAT_OF_EXTENSION)))}")
    if opts.bit_depth is not None and opts.bit_depth not in BIT_DEPTHS[fmt]:
        able = sorted(f for f, depths in BIT_DEPTHS.items() if opts.bit_depth in depths)
        raise N3Error(f"{out}: {fmt} holds {' or '.join(str(d) for d in BIT_DEPTHS[fmt])} bits per sample; "
                      f"--bit-depth {opts.bit_depth} needs {' or '.join(able)}")
    check_target(out, inp, opts.force)


def check_target(path: Path, inp: Path, force: bool, what: str = "output") -> None:
    """Refuse before computing: the input itself, a folder, an existing file without --force, a missing or
    unwritable folder (every subcommand's outputs go through this)."""
    if path.exists() and inp.exists() and os.path.samefile(path, inp):
        raise N3Error(f"{path}: {what} is the input file; writing it would overwrite the input")
    if path.is_symlink() and not path.exists():
        raise N3Error(f"{path}: {what} is a broken symbolic link")
    if path.is_dir():
        raise N3Error(f"{path}: {what} is a folder")
    if path.exists() and not force:
        raise N3Error(f"{path}: already exists (use --force to overwrite)")
    parent = path.parent
    if not parent.is_dir():
        raise N3Error(f"{parent}: output folder does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise N3Error(f"{parent}: output folder is not writable")
    try:  # permission bits do not tell everything (root, read-only mounts, /proc): try it
        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as exc:
        raise N3Error(f"{parent}: output folder is not writable ({exc.strerror or exc})") from None


def check_reference_size(job: Job, size: tuple[int, int]) -> None:
    """The job's reference (if any) must be ``size`` (width, height), checked from the headers."""
    if job.reference is None:
        return
    ref = image_size(job.reference)
    if ref != size:
        raise N3Error(f"{job.reference}: reference is {ref[0]}x{ref[1]}, the output will be {size[0]}x{size[1]}")


def screen_jobs(jobs: list[Job], early_errors: list[Failure], opts: Options,
                check: Callable[[Job, tuple[int, int]], None] | None = None) -> tuple[list[Job], list[Failure]]:
    """Set aside, before any model is loaded, the jobs that would fail: a refused output (``check_output``),
    an input whose header is unreadable, too large or too small, or what the subcommand's own
    ``check(job, (width, height))`` finds from the headers (output sizes, references)."""
    kept: list[Job] = []
    errors = list(early_errors)
    for job in jobs:
        try:
            check_output(job, opts)
            w, h = image_size(job.input)
            if opts.max_pixels is not None and w * h > opts.max_pixels:
                raise N3Error(f"{job.input}: {w}x{h} is over {opts.max_pixels / 1e6:.4g} megapixels "
                              "(use --allow-large to read it anyway)")
            if min(w, h) < opts.min_side:
                raise N3Error(f"{job.input}: {w}x{h} is too small (at least {opts.min_side}x{opts.min_side} pixels)")
            if check is not None:
                check(job, (w, h))
            kept.append(job)
        except N3Error as exc:
            if opts.debug:
                traceback.print_exc()
            errors.append(_failure(exc, job.input))
    if not kept:
        _remove_unused_folders(opts)
    return kept, errors


def report_nothing_to_do(errors: list[Failure], opts: Options | None = None) -> int:
    """Print every error of a run that has no job left (with --json also a record each); returns the exit status
    (bad input)."""
    for failure in errors:
        _report_failure(failure, opts)
    if not errors:
        err_console.print("[bold red]error:[/] no input images")
    return EXIT_BAD_INPUT


def _report_failure(failure: Failure, opts: Options | None) -> None:
    """The error line on stderr, and with --json a record ``{"input", "error"}`` on stdout."""
    err_console.print(f"[bold red]error:[/] {failure.message}", highlight=False, soft_wrap=True)
    if opts is not None and opts.json:
        _print_record({"input": failure.input, "error": failure.message})


def _print_record(record: dict[str, Any]) -> None:
    """A JSON record on stdout: one line, or indented where stdout is a terminal."""
    text = json.dumps(record)
    out_console.print_json(text) if sys.stdout.isatty() else print(text, flush=True)


def run_jobs(jobs: list[Job], early_errors: list[Failure], opts: Options,
             process: Callable[[Image, TileProgress], tuple[np.ndarray, dict[str, Any]]],
             score: Callable[[Job, Image, Image], dict[str, Any]] | None = None) -> int:
    """Process every job; returns the exit status (0 ok, 1 some failed, 2 nothing could be done).

    ``process`` returns the output pixels and facts for the record (e.g. the σ used); pixels with
    2 or 4 channels carry a new alpha channel last (e.g. upscaled), which replaces the input's.
    ``score`` compares input and the saved output with the job's reference.
    """
    if not jobs:
        return report_nothing_to_do(early_errors, opts)
    failures = list(early_errors)
    for failure in early_errors:
        _report_failure(failure, opts)
    done = 0
    with ProgressDisplay(err_console, len(jobs), enabled=not opts.quiet) as progress:
        for job in jobs:
            try:
                check_output(job, opts)
                img = read_image(job.input, max_pixels=opts.max_pixels)
                progress.start(str(job.input))
                t0 = time.perf_counter()
                pixels, facts = process(img, progress.work)
                seconds = time.perf_counter() - t0
                like = img
                if pixels.ndim == 3 and pixels.shape[2] in (2, 4):
                    like, pixels = replace(img, alpha=pixels[:, :, -1]), pixels[:, :, :-1]
                write_image(job.output, pixels, like=like, bit_depth=opts.bit_depth, overwrite=opts.force)
                record: dict[str, Any] = {"input": str(job.input), "output": str(job.output), **facts}
                if score is not None and job.reference is not None:
                    try:
                        record.update(score(job, img, read_image(job.output, max_pixels=None)))
                    except N3Error:  # (a reference of another kind): no output without its record
                        job.output.unlink(missing_ok=True)
                        raise
                record["seconds"] = round(seconds, 3)
                done += 1
                _report(record, opts)
            except N3Error as exc:
                if opts.debug:
                    traceback.print_exc()
                failures.append(_failure(exc, job.input, name_it=True))
                _report_failure(failures[-1], opts)
            progress.finish()
    if not failures:
        return 0
    if not done:
        _remove_unused_folders(opts)
    return EXIT_PARTIAL if done else EXIT_BAD_INPUT


def _report(record: dict[str, Any], opts: Options) -> None:
    if opts.json:
        _print_record(record)
        return
    if opts.quiet:
        return
    err_console.print(summary_line(record), highlight=False, soft_wrap=True)


def summary_line(record: dict[str, Any]) -> str:
    """The one human-readable line per image: paths, noise level or scale, scores, time."""
    parts = [f"{record['input']} → {record['output']}"]
    sigma = record.get("sigma")
    if record.get("blind"):
        parts.append("noise level inferred (blind)")
    elif sigma is not None and sigma != []:  # (none: a model trained for a level it does not record)
        values = sigma if isinstance(sigma, (list, tuple)) else [sigma]
        shown = "/".join(f"{v:.1f}" for v in values)
        parts.append(f"σ {shown}" + (f" ({record['color']})" if record.get("color") and len(values) > 1 else ""))
    if record.get("nlf") is not None:
        parts.append("NLF a={:.3g} b={:.3g}".format(*record["nlf"]))
    labels = {"scale": "×{}", "psnr_in": "PSNR in {:.2f} dB", "psnr_bicubic": "PSNR bicubic {:.2f} dB",
              "psnr_out": "PSNR out {:.2f} dB", "ssim_out": "SSIM out {:.4f}"}
    parts += [fmt.format(record[key]) for key, fmt in labels.items() if record.get(key) is not None]
    parts.append(f"{record['seconds']:.1f} s")
    return "  ".join(parts)
