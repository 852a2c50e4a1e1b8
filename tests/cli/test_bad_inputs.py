"""Bad-input corpus (issue #46): every image subcommand, fed inputs it must refuse, fails the same clean way.

Each case builds its bad input inside ``tmp_path`` and runs ``n3`` in-process. A failing run must:

* exit with status 2 (1 when only some of several inputs failed; 130 for Ctrl-C),
* print exactly one error line on stderr, last; the only lines allowed before it are the model / NLF /
  warning lines the command prints before it starts on an image (see ``PREAMBLE``),
* print nothing on stdout (mixed cases with ``--json``: one record per input, its output or its error),
* end without an uncaught exception (in-process, that is what a traceback would be),
* show no terminal escape codes (stderr is not a terminal here),
* write nothing: no output, no temporary file, no change to any file that was there (mixed cases: only the
  good inputs' outputs appear).

stderr includes what C libraries write to file descriptor 2 (``capfd``) and Python warnings, shown as a user
would see them. Cases marked ``before_work`` must be refused before the network (or the SR upscale) runs: both
are patched to raise :class:`NetworkReached`.

Cases that fail on today's code carry ``xfail(strict=True)`` with what happens today, so that each turns into
an XPASS failure when it is fixed: then delete its entry in :data:`TODAY`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import re
import struct
import sys
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from typer.testing import CliRunner

from n3cli.cli.app import app
from n3cli.nn.nets import n3net_sr
from n3cli.raw.dng import write_dng
from n3cli.raw.io import RawImage
from n3cli.weights import ModelInfo, save_weights

from ..conftest import tiny_nlf_weights

runner = CliRunner()

#: Lines a command may print on stderr before its error line: the model it loaded, the raw's size and NLF, and
#: warnings about the settings (untrained noise level or scale).
PREAMBLE = re.compile(r"^(model \S+ on |.*: \d+x\d+ \w+ mosaic; model |NLF \(|warning: )")


class NetworkReached(BaseException):  # noqa: N818 - a sentinel, not an error the tool could catch and report
    """Raised by the patched network / upscaler in cases that must be refused before any work."""


# --- the files of the corpus ------------------------------------------------------------------------------------


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def gray_png(path: Path, size: tuple[int, int] = (32, 32), seed: int = 0) -> Path:
    Image.fromarray(_rng(seed).integers(0, 256, size, dtype=np.uint8)).save(path)
    return path


def truncated(path: Path, data: bytes) -> Path:
    path.write_bytes(data[: len(data) // 2])
    return path


def png_bytes(size: tuple[int, int] = (64, 64)) -> bytes:
    buf = BytesIO()
    Image.fromarray(_rng().integers(0, 256, size, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(size: tuple[int, int] = (64, 64)) -> bytes:
    buf = BytesIO()
    Image.fromarray(_rng().integers(0, 256, (*size, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def tiff_bytes(size: tuple[int, int] = (64, 64)) -> bytes:
    buf = BytesIO()
    tifffile.imwrite(buf, _rng().integers(0, 256, size, dtype=np.uint8), compression="zlib")
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(path: Path, side: int = 100_000) -> Path:
    """A PNG whose header claims side x side 8-bit gray pixels (10 gigapixels), with a tiny compressed body."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\0" * 4096)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", body)
                     + png_chunk(b"IEND", b""))
    return path


def float_tiff(path: Path, bad: float) -> Path:
    arr = _rng().random((32, 32), dtype=np.float32)
    arr[8:12, 8:12] = bad
    tifffile.imwrite(path, arr)
    return path


def animated_gif(path: Path) -> Path:
    frames = [Image.fromarray(_rng(i).integers(0, 256, (32, 32), dtype=np.uint8)).convert("P") for i in range(3)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def synthetic_dng(path: Path, size: int = 64) -> Path:
    """A small GRBG DNG with a NoiseProfile tag (as tests/raw/test_raw_denoise.py makes them)."""
    y, x = np.mgrid[0:size, 0:size] / size
    mosaic = (0.2 + 0.5 * x + 0.1 * np.sin(6 * y)).astype(np.float32)
    raw = RawImage(path=Path("synthetic.dng"), mosaic=mosaic, pattern="GRBG",
                   black_levels=np.full((2, 2), 512.0), white_level=16383.0, camera_wb=(2.0, 1.0, 1.5, 1.0),
                   daylight_wb=(2.0, 1.0, 1.5, 1.0), color_matrix=np.eye(3, 4),
                   xyz_to_cam=(np.array([[0.9, -0.4, 0.0], [-0.3, 1.3, 0.2], [0.0, 0.15, 0.7]]),),
                   illuminants=(21,), make="Test", model="Cam")
    return write_dng(path, raw, mosaic, noise_profile=(2e-3, 2e-5))


class Evil:
    """Unpickling this creates the file ``marker``: a checkpoint must never be unpickled unrestricted."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, ...]:
        return (open, (self.marker, "w"))


# --- the cases ---------------------------------------------------------------------------------------------------


@dataclass
class Ctx:
    """Where a case builds its files (``tmp``), and the weights shared by all cases."""

    tmp: Path
    nlf: Path  # tiny noise-level-conditional denoiser
    sr: Path  # tiny SR model
    dng_bytes: bytes

    @property
    def marker(self) -> Path:
        return self.tmp / "PWNED"

    def img(self, name: str = "in.png", size: tuple[int, int] = (32, 32)) -> Path:
        return gray_png(self.tmp / name, size)

    def dng(self, name: str = "in.dng") -> Path:
        path = self.tmp / name
        path.write_bytes(self.dng_bytes)
        return path

    def folder(self, name: str) -> Path:
        path = self.tmp / name
        path.mkdir()
        return path


Args = Callable[[Ctx], list[object]]


@dataclass
class Case:
    args: Args
    code: int = 2
    #: A word the error line must contain (case-insensitive), e.g. the option or the file's name.
    says: str = ""
    #: Outputs that must exist afterwards (mixed runs), relative to tmp.
    written: tuple[str, ...] = ()
    #: Paths outside tmp that must not exist afterwards.
    outside: tuple[str, ...] = ()
    #: The run must be refused before the network (or the SR upscale) starts.
    before_work: bool = False
    #: Patch something before the run (e.g. make the network raise KeyboardInterrupt).
    patch: Callable[[pytest.MonkeyPatch], None] | None = None
    #: --json records expected on stdout (mixed runs: one per input, written or failed).
    records: int = 0


def command(name: str, weights: Callable[[Ctx], Path]) -> Callable[..., Args]:
    """``n3 NAME ARGS`` with the tiny model on the CPU, one thread (unless ARGS give --weights / --device)."""
    def build(*args: object) -> Args:
        def argv(c: Ctx) -> list[object]:
            out = [name, *expand(c, args), "--threads", "1"]
            if "--weights" not in args:
                out += ["--weights", weights(c)]
            if "--device" not in args:
                out += ["--device", "cpu"]
            return out
        return argv
    return build


denoise = command("denoise", lambda c: c.nlf)
sr = command("sr", lambda c: c.sr)
raw = command("raw-denoise", lambda c: c.nlf)


def plain(*args: object) -> Args:
    return lambda c: list(expand(c, args))


#: Placeholders: each builds its file in tmp when the command line is expanded.
MAKERS: dict[str, Callable[[Ctx], object]] = {
    "{img}": lambda c: c.img(),
    "{big}": lambda c: c.img("big.png", (160, 160)),
    "{dng}": lambda c: c.dng(),
    "{tmp}": lambda c: c.tmp,
    "{nlf}": lambda c: c.nlf,
    "{sr}": lambda c: c.sr,
    "{missing}": lambda c: c.tmp / "missing.png",
    "{missing.dng}": lambda c: c.tmp / "missing.dng",
    "{empty}": lambda c: _write(c.tmp / "empty.png", b""),
    "{empty.dng}": lambda c: _write(c.tmp / "empty.dng", b""),
    "{text.png}": lambda c: _write(c.tmp / "text.png", b"hello, I am a text file\n"),
    "{text.dng}": lambda c: _write(c.tmp / "text.dng", b"hello, I am a text file\n"),
    "{trunc.png}": lambda c: truncated(c.tmp / "trunc.png", png_bytes()),
    "{trunc.jpg}": lambda c: truncated(c.tmp / "trunc.jpg", jpeg_bytes()),
    "{trunc.tif}": lambda c: truncated(c.tmp / "trunc.tif", tiff_bytes()),
    "{trunc.dng}": lambda c: truncated(c.tmp / "trunc.dng", c.dng_bytes),
    "{emptydir}": lambda c: c.folder("emptydir"),
    "{bomb}": lambda c: png_bomb(c.tmp / "bomb.png"),
    "{1x1}": lambda c: c.img("one.png", (1, 1)),
    "{3x3}": lambda c: c.img("three.png", (3, 3)),
    "{nan.tif}": lambda c: float_tiff(c.tmp / "nan.tif", float("nan")),
    "{inf.tif}": lambda c: float_tiff(c.tmp / "inf.tif", float("inf")),
    "{anim.gif}": lambda c: animated_gif(c.tmp / "anim.gif"),
    "{ref16}": lambda c: c.img("ref16.png", (16, 16)),
    "{existing}": lambda c: _write(c.tmp / "out.png", b"keep me"),
    "{corrupt.safetensors}": lambda c: _write(c.tmp / "corrupt.safetensors", _rng().bytes(4096)),
    "{corrupt.pt}": lambda c: _write(c.tmp / "corrupt.pt", _rng().bytes(4096)),
    "{evil.pt}": lambda c: _evil_torch(c.tmp / "evil.pt", c.marker),
    "{evil.pkl.pt}": lambda c: _write(c.tmp / "evil.pkl.pt", pickle.dumps({"net": Evil(c.marker)})),
    "{good+trunc}": lambda c: [c.img("a.png"), truncated(c.tmp / "b.png", png_bytes())],
    "{good+text}": lambda c: [c.img("a.png"), _write(c.tmp / "b.png", b"not an image")],
    "{good+missing}": lambda c: [c.img("a.png"), c.tmp / "missing.png"],
    "{mixdir}": lambda c: _mixdir(c),
    "{outdir}": lambda c: c.folder("out"),
    "{f255.tif}": lambda c: _float_tiff_255(c.tmp / "f255.tif"),
    "{run.yaml}": lambda c: _write(c.tmp / "run.yaml", b"data:\n  - imgs\nsteps: 10\n"),
    "{same-names}": lambda c: [c.img("a.png"), gray_png(c.folder("sub") / "a.png")],
    "{input+its-output}": lambda c: [c.img("in.png"), c.img("in_n3.png")],
    "{dangling}": lambda c: _dangling(c.tmp / "link.png"),
    "{black}": lambda c: _write(c.tmp / "black.png", _png_of(np.zeros((32, 32), np.uint8))),
    "{dataset-empty}": lambda c: c.folder("set"),
    "{dataset-trunc}": lambda c: _trunc_dataset(c),
}


def _float_tiff_255(path: Path) -> Path:
    """A float TIFF on the 0-255 scale (fed as it is, its values drove the N3 temperature to inf and out came NaN)."""
    tifffile.imwrite(path, 255 * _rng().random((32, 32), dtype=np.float32))
    return path


def _dangling(path: Path) -> Path:
    path.symlink_to(path.parent / "nowhere.png")
    return path


def _png_of(arr: np.ndarray) -> bytes:
    buf = BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _evil_torch(path: Path, marker: Path) -> Path:
    torch.save({"net": Evil(marker)}, path)
    return path


def _mixdir(c: Ctx) -> Path:
    folder = c.folder("mixed")
    gray_png(folder / "a.png")
    (folder / "b.png").write_bytes(b"not an image")
    return folder


def _trunc_dataset(c: Ctx) -> Path:
    folder = c.folder("set")
    truncated(folder / "01.png", png_bytes())
    return folder


def expand(c: Ctx, args: tuple[object, ...]) -> list[object]:
    """Replace placeholders (whole arguments, or the start of an argument like ``{tmp}/out.png``)."""
    out: list[object] = []
    for a in args:
        if isinstance(a, str) and a in MAKERS:
            made = MAKERS[a](c)
            out += made if isinstance(made, list) else [made]
        elif isinstance(a, str) and a.startswith("{tmp}"):
            out.append(str(c.tmp) + a[len("{tmp}"):])
        else:
            out.append(a)
    return out


def interrupt(target: str) -> Callable[[pytest.MonkeyPatch], None]:
    """Make ``target`` (e.g. the network) raise KeyboardInterrupt, as Ctrl-C in the middle of an image."""
    def patch(mp: pytest.MonkeyPatch) -> None:
        def ctrl_c(*args: object, **kwargs: object) -> None:
            raise KeyboardInterrupt

        mp.setattr(target, ctrl_c)
    return patch


def interrupt_while_writing(mp: pytest.MonkeyPatch) -> None:
    """Ctrl-C after the encoder has written half a file (into the temporary file)."""
    def half_then_ctrl_c(f: str, *args: object) -> None:
        Path(f).write_bytes(b"\x89PNG\r\n\x1a\n partial")
        raise KeyboardInterrupt

    mp.setattr("n3cli.imaging.io._write_data", half_then_ctrl_c)


#: Cases known to fail, with what happens (strict xfails, so a fix shows as an XPASS). None since issue #46.
TODAY: dict[str, str] = {}


#: Failures that need root: for other users os.access already refuses /proc before any work.
AS_ROOT = {"denoise-output-under-proc", "sr-output-under-proc", "raw-output-under-proc"}


def param(case_id: str, case: Case, *marks: pytest.MarkDecorator) -> object:
    """A case; those in :data:`TODAY` are strict xfails, with what happens today as the reason."""
    if case_id in TODAY:
        when = getattr(os, "geteuid", lambda: -1)() == 0 if case_id in AS_ROOT else True
        marks = (*marks, pytest.mark.xfail(when, reason=TODAY[case_id], strict=True))
    return pytest.param(case, id=case_id, marks=marks)


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is available here")

CASES = [
    # --- denoise: files that are not images, or not images it can take
    param("denoise-missing-file", Case(denoise("{missing}", "--sigma", "25"), says="missing.png")),
    param("denoise-empty-file", Case(denoise("{empty}", "--sigma", "25"), says="empty.png")),
    param("denoise-truncated-png", Case(denoise("{trunc.png}", "--sigma", "25"), says="trunc.png")),
    param("denoise-truncated-jpeg", Case(denoise("{trunc.jpg}", "--sigma", "25"), says="trunc.jpg")),
    param("denoise-truncated-tiff", Case(denoise("{trunc.tif}", "--sigma", "25"), says="trunc.tif")),
    param("denoise-text-named-png", Case(denoise("{text.png}", "--sigma", "25"), says="text.png")),
    param("denoise-empty-folder", Case(denoise("{emptydir}", "--sigma", "25"), says="emptydir")),
    param("denoise-decompression-bomb", Case(denoise("{bomb}", "--sigma", "25"), says="bomb.png")),
    param("denoise-1x1", Case(denoise("{1x1}", "--sigma", "25"), says="one.png")),
    param("denoise-3x3", Case(denoise("{3x3}", "--sigma", "25"), says="three.png")),
    param("denoise-float-tiff-nan", Case(denoise("{nan.tif}", "--sigma", "25"), says="nan.tif")),
    param("denoise-float-tiff-inf", Case(denoise("{inf.tif}", "--sigma", "25"), says="inf.tif")),
    param("denoise-float-tiff-0-255", Case(denoise("{f255.tif}", "--sigma", "25"), says="f255.tif",
                                           before_work=True)),
    param("denoise-float-tiff-0-255-blind", Case(denoise("{f255.tif}"), says="f255.tif", before_work=True)),
    param("denoise-animated-gif", Case(denoise("{anim.gif}", "--sigma", "25", "-o", "{tmp}/out.png"),
                                       says="anim.gif")),
    # --- denoise: bad numbers and options
    param("denoise-sigma-negative", Case(denoise("{img}", "--sigma", "-1"), says="--sigma")),
    param("denoise-sigma-nan", Case(denoise("{img}", "--sigma", "nan"), says="--sigma")),
    param("denoise-sigma-abc", Case(denoise("{img}", "--sigma", "abc"), says="--sigma")),
    param("denoise-sigma-1e9", Case(denoise("{img}", "--sigma", "1e9"), says="sigma")),
    param("denoise-nlf-three-values", Case(denoise("{img}", "--nlf", "1,2,3"), says="--nlf")),
    param("denoise-nlf-negative", Case(denoise("{img}", "--nlf", "-1,0"), says="--nlf")),
    param("denoise-nlf-nan", Case(denoise("{img}", "--nlf", "nan,1"), says="--nlf")),
    param("denoise-tile-0", Case(denoise("{img}", "--sigma", "25", "--tile", "0"), says="--tile")),
    param("denoise-tile-negative", Case(denoise("{img}", "--sigma", "25", "--tile", "-5"), says="--tile")),
    param("denoise-tile-abc", Case(denoise("{img}", "--sigma", "25", "--tile", "abc"), says="--tile")),
    param("denoise-bit-depth-7", Case(denoise("{img}", "--sigma", "25", "--bit-depth", "7"), says="--bit-depth")),
    param("denoise-bit-depth-12", Case(denoise("{img}", "--sigma", "25", "--bit-depth", "12"), says="--bit-depth")),
    param("denoise-device-tpu", Case(denoise("{img}", "--sigma", "25", "--device", "tpu"), says="tpu")),
    param("denoise-device-cuda-unavailable", Case(denoise("{img}", "--sigma", "25", "--device", "cuda"), says="cuda"),
          NO_CUDA),
    # --- denoise: bad outputs
    param("denoise-output-is-input", Case(denoise("{img}", "--sigma", "25", "-o", "{tmp}/in.png", "--force"),
                                          says="in.png")),
    param("denoise-missing-output-folder", Case(denoise("{img}", "--sigma", "25", "-o", "{tmp}/nowhere/out.png"),
                                                says="nowhere")),
    param("denoise-output-under-proc", Case(denoise("{img}", "--sigma", "25", "-o", "/proc/n3test-out.png"),
                                            says="/proc", outside=("/proc/n3test-out.png",), before_work=True)),
    param("denoise-two-inputs-one-output", Case(denoise("{same-names}", "--sigma", "25", "-o", "{tmp}/new", "--force"),
                                                says="a_n3.png", before_work=True)),  # and no folder new/ left
    param("denoise-two-inputs-o-file", Case(denoise("{good+missing}", "--sigma", "25", "-o", "{tmp}/out.png"),
                                            says="must name a folder", before_work=True)),
    param("denoise-output-is-another-input", Case(denoise("{input+its-output}", "--sigma", "25", "--force"),
                                                  says="in_n3.png", before_work=True)),
    param("denoise-bit-depth-16-jpeg", Case(denoise("{img}", "--sigma", "25", "-o", "{tmp}/out.jpg", "--bit-depth",
                                                    "16"), says="--bit-depth", before_work=True)),
    param("denoise-bit-depth-32-png", Case(denoise("{img}", "--sigma", "25", "-o", "{tmp}/out.png", "--bit-depth",
                                                   "32"), says="--bit-depth", before_work=True)),
    param("denoise-output-broken-symlink", Case(denoise("{img}", "--sigma", "25", "-o", "{dangling}"),
                                                says="link.png", before_work=True)),
    param("denoise-existing-output-no-force", Case(denoise("{img}", "--sigma", "25", "-o", "{existing}"),
                                                   says="out.png")),
    # --- denoise: bad weights
    param("denoise-unknown-weights", Case(denoise("{img}", "--sigma", "25", "--weights", "no-such-model"),
                                          says="no-such-model")),
    param("denoise-corrupt-weights", Case(denoise("{img}", "--sigma", "25", "--weights", "{corrupt.safetensors}"),
                                          says="corrupt.safetensors")),
    param("denoise-malicious-pickle-weights", Case(denoise("{img}", "--sigma", "25", "--weights", "{evil.pt}"),
                                                   says="evil.pt")),
    param("denoise-malicious-raw-pickle-weights",
          Case(denoise("{img}", "--sigma", "25", "--weights", "{evil.pkl.pt}"), says="evil.pkl.pt")),
    param("denoise-shipped-sr-weights", Case(denoise("{img}", "--sigma", "25", "--weights", "vdsr-light"),
                                             says="vdsr-light")),
    param("denoise-sr-weights-file", Case(denoise("{img}", "--sigma", "25", "--weights", "{sr}"), says="sr")),
    # --- denoise: reference, interruptions
    param("denoise-reference-wrong-size",
          Case(denoise("{img}", "--sigma", "25", "-o", "{tmp}/out.png", "--reference", "{ref16}"), says="ref16.png",
               before_work=True)),
    param("denoise-ctrl-c-mid-image", Case(denoise("{img}", "--sigma", "25", "-o", "{tmp}/out.png"), code=130,
                                           says="interrupted", patch=interrupt("n3cli.api.run"))),
    param("denoise-ctrl-c-while-writing", Case(denoise("{img}", "--sigma", "25", "-o", "{tmp}/out.png"), code=130,
                                               says="interrupted", patch=interrupt_while_writing)),
    # --- denoise: several inputs, some bad (exit 1, the good one's output written)
    param("denoise-mixed-good-and-truncated",
          Case(denoise("{good+trunc}", "--sigma", "25", "-o", "{outdir}", "--json"), code=1, says="b.png",
               written=("out/a_n3.png",), records=2)),
    param("denoise-mixed-folder", Case(denoise("{mixdir}", "--sigma", "25", "--json"), code=1, says="b.png",
                                       written=("mixed/a_n3.png",), records=2)),
    param("denoise-mixed-good-and-missing",
          Case(denoise("{good+missing}", "--sigma", "25", "-o", "{outdir}", "--json"), code=1, says="missing.png",
               written=("out/a_n3.png",), records=2)),
    param("denoise-mixed-missing-then-good-o-folder",  # -o is a folder for two inputs, even with one missing
          Case(denoise("{tmp}/missing.png", "{img}", "--sigma", "25", "-o", "{tmp}/res", "--json"), code=1,
               says="missing.png", written=("res/", "res/in_n3.png"), records=2)),
    # --- sr
    param("sr-float-tiff-0-255", Case(sr("{f255.tif}", "--scale", "2"), says="f255.tif", before_work=True)),
    param("sr-missing-file", Case(sr("{missing}", "--scale", "2"), says="missing.png")),
    param("sr-truncated-png", Case(sr("{trunc.png}", "--scale", "2"), says="trunc.png")),
    param("sr-text-named-png", Case(sr("{text.png}", "--scale", "2"), says="text.png")),
    param("sr-decompression-bomb", Case(sr("{bomb}", "--scale", "2"), says="bomb.png")),
    param("sr-1x1", Case(sr("{1x1}", "--scale", "2"), says="one.png")),
    param("sr-float-tiff-nan", Case(sr("{nan.tif}", "--scale", "2"), says="nan.tif")),
    param("sr-scale-0", Case(sr("{img}", "--scale", "0"), says="--scale")),
    param("sr-scale-1", Case(sr("{img}", "--scale", "1"), says="--scale")),
    param("sr-scale-2.5", Case(sr("{img}", "--scale", "2.5"), says="--scale")),
    param("sr-scale-abc", Case(sr("{img}", "--scale", "abc"), says="--scale")),
    param("sr-scale-100", Case(sr("{big}", "--scale", "100"), before_work=True)),  # refused by scale or size
    param("sr-tile-0", Case(sr("{img}", "--scale", "2", "--tile", "0"), says="--tile")),
    param("sr-bit-depth-12", Case(sr("{img}", "--scale", "2", "--bit-depth", "12"), says="--bit-depth")),
    param("sr-existing-output-no-force", Case(sr("{img}", "--scale", "2", "-o", "{existing}"), says="out.png")),
    param("sr-output-under-proc", Case(sr("{img}", "--scale", "2", "-o", "/proc/n3test-sr.png"), says="/proc",
                                       outside=("/proc/n3test-sr.png",), before_work=True)),
    param("sr-denoiser-weights-file", Case(sr("{img}", "--scale", "2", "--weights", "{nlf}"), says="tiny")),
    param("sr-shipped-denoiser-weights", Case(sr("{img}", "--scale", "2", "--weights", "n3net-nlf"),
                                              says="n3net-nlf")),
    param("sr-reference-wrong-size", Case(sr("{img}", "--scale", "2", "-o", "{tmp}/out.png", "--reference", "{ref16}"),
                                          says="ref16.png", before_work=True)),
    param("sr-ctrl-c-mid-image", Case(sr("{img}", "--scale", "2", "-o", "{tmp}/out.png"), code=130,
                                      says="interrupted", patch=interrupt("n3cli.api.run"))),
    param("sr-mixed-good-and-text", Case(sr("{good+text}", "--scale", "2", "-o", "{outdir}", "--json"), code=1,
                                         says="b.png", written=("out/a_x2.png",), records=2)),
    # --- raw-denoise
    param("raw-missing-file", Case(raw("{missing.dng}", "-o", "{tmp}/out.png"), says="missing.dng")),
    param("raw-empty-file", Case(raw("{empty.dng}", "-o", "{tmp}/out.png"), says="empty.dng")),
    param("raw-text-named-dng", Case(raw("{text.dng}", "-o", "{tmp}/out.png"), says="text.dng")),
    param("raw-truncated-dng", Case(raw("{trunc.dng}", "-o", "{tmp}/out.png"), says="trunc.dng")),
    param("raw-png-input", Case(raw("{img}", "-o", "{tmp}/out.png"), says="in.png")),
    param("raw-nlf-three-values", Case(raw("{dng}", "-o", "{tmp}/out.png", "--nlf", "1,2,3"), says="--nlf")),
    param("raw-nlf-negative", Case(raw("{dng}", "-o", "{tmp}/out.png", "--nlf", "-1,0"), says="--nlf")),
    param("raw-nlf-nan", Case(raw("{dng}", "-o", "{tmp}/out.png", "--nlf", "nan,1"), says="--nlf")),
    param("raw-bits-7", Case(raw("{dng}", "-o", "{tmp}/out.png", "--bits", "7"), says="--bit-depth")),
    param("raw-bits-12", Case(raw("{dng}", "-o", "{tmp}/out.png", "--bit-depth", "12"), says="--bit-depth")),
    param("raw-tile-0", Case(raw("{dng}", "-o", "{tmp}/out.png", "--tile", "0"), says="--tile")),
    param("raw-device-tpu", Case(raw("{dng}", "-o", "{tmp}/out.png", "--device", "tpu"), says="tpu")),
    param("raw-shipped-sr-weights", Case(raw("{dng}", "-o", "{tmp}/out.png", "--weights", "vdsr-light"),
                                         says="vdsr-light")),
    param("raw-output-is-input", Case(raw("{dng}", "-o", "{tmp}/out.png", "--dng", "{tmp}/in.dng", "--force"),
                                      says="in.dng")),
    param("raw-missing-output-folder", Case(raw("{dng}", "-o", "{tmp}/nowhere/out.png"), says="nowhere")),
    param("raw-output-under-proc", Case(raw("{dng}", "-o", "/proc/n3test-raw.png"), says="/proc",
                                        outside=("/proc/n3test-raw.png",), before_work=True)),
    param("raw-existing-output-no-force", Case(raw("{dng}", "-o", "{existing}"), says="out.png")),
    param("raw-ctrl-c-mid-image", Case(raw("{dng}", "-o", "{tmp}/out.png", "--dng", "{tmp}/out.dng", "--compare"),
                                       code=130, says="interrupted", patch=interrupt("n3cli.api.run"))),
    # --- bench and weights
    param("bench-empty-folder", Case(plain("bench", "--dataset", "{dataset-empty}", "--methods", "noisy"),
                                     says="set")),
    param("bench-missing-folder", Case(plain("bench", "--dataset", "{tmp}/nope", "--methods", "noisy"), says="nope")),
    param("bench-truncated-image", Case(plain("bench", "--dataset", "{dataset-trunc}", "--methods", "noisy",
                                              "--quiet"), says="01.png")),
    param("bench-sigma-abc", Case(plain("bench", "--dataset", "{dataset-trunc}", "--methods", "noisy", "--sigma",
                                        "abc"), says="--sigma")),
    param("weights-import-missing", Case(plain("weights", "import", "{tmp}/missing.t7", "-o", "{tmp}/w.safetensors"),
                                         says="missing.t7")),
    param("weights-import-corrupt", Case(plain("weights", "import", "{corrupt.pt}", "-o", "{tmp}/w.safetensors"),
                                         says="corrupt.pt")),
    param("weights-import-malicious-pickle",
          Case(plain("weights", "import", "{evil.pkl.pt}", "-o", "{tmp}/w.safetensors"), says="evil.pkl.pt")),
    param("weights-import-an-image", Case(plain("weights", "import", "{img}", "-o", "{tmp}/w.safetensors"),
                                          says="not a PyTorch checkpoint")),
    param("weights-import-not-safetensors", Case(plain("weights", "import", "{corrupt.pt}", "-o", "{corrupt.pt}",
                                                       "--force"), says="*.safetensors")),
    param("weights-import-onto-itself", Case(plain("weights", "import", "{corrupt.safetensors}", "-o",
                                                   "{corrupt.safetensors}", "--force"), says="is the input file")),
    param("weights-export-a-folder", Case(plain("weights", "export", "{outdir}", "-o", "{tmp}/w.safetensors",
                                                "--name", "x"), says="last.pt")),
    param("weights-export-not-safetensors", Case(plain("weights", "export", "{corrupt.pt}", "-o", "{tmp}/w.png",
                                                       "--name", "x"), says=".safetensors")),
    param("weights-export-precise-bn-negative", Case(plain("weights", "export", "{corrupt.pt}", "-o",
                                                           "{tmp}/w.safetensors", "--name", "x", "--precise-bn", "-1"),
                                                     says="--precise-bn")),
    param("train-eval-every-0", Case(plain("train", "--data", "{outdir}", "--out", "{tmp}/run", "--set",
                                           "eval_every=0", "--threads", "1"), says="eval_every")),
    param("train-yaml-run-file", Case(plain("train", "--config", "{run.yaml}", "--out", "{tmp}/run", "--threads",
                                            "1"), says="TOML")),
    param("sets-steps-0", Case(plain("sets", "--steps", "0"), says="--steps")),
    param("sets-device-gpu", Case(plain("sets", "--steps", "1", "--device", "gpu"), says="gpu")),
    param("weights-export-malicious-pickle",
          Case(plain("weights", "export", "{evil.pt}", "-o", "{tmp}/w.safetensors", "--name", "x", "--precise-bn",
                     "0"), says="evil.pt")),
]


# --- the checks --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, bytes]:
    folder = tmp_path_factory.mktemp("weights")
    nlf = tiny_nlf_weights(folder, "tiny", seed=0)
    sr_model = n3net_sr(depth=3, features=8, embed_features=8).eval()
    sr_path = save_weights(folder / "tiny-sr.safetensors", sr_model, ModelInfo(name="tiny-sr", task="sr"))
    dng = synthetic_dng(tmp_path_factory.mktemp("dng") / "scene.dng").read_bytes()
    return nlf, sr_path, dng


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` (hidden ones included) with a hash of its content (links: their target)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root) + "/"] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            link = os.path.islink(p)
            out[os.path.relpath(p, root)] = ("link to " + os.readlink(p) if link
                                             else hashlib.sha256(Path(p).read_bytes()).hexdigest())
    return out


@contextlib.contextmanager
def warnings_as_a_user_sees_them() -> Iterator[None]:
    """Python's default warning filters, printed on (the captured) stderr as the real command would, instead of
    pytest's capture: a library's warning is a line the user sees."""
    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: object = None, line: str | None = None) -> None:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    with warnings.catch_warnings():
        warnings.resetwarnings()
        warnings.simplefilter("default")
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", category)
        warnings.showwarning = show
        yield


def no_work(mp: pytest.MonkeyPatch) -> None:
    def reached(*args: object, **kwargs: object) -> None:
        raise NetworkReached

    mp.setattr("n3cli.api.run", reached)
    mp.setattr("n3cli.api.imresize", reached)


@pytest.mark.parametrize("case", CASES)
def test_bad_input(case: Case, tmp_path: Path, shared: tuple[Path, Path, bytes],
                   monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    nlf, sr_path, dng = shared
    ctx = Ctx(tmp_path, nlf, sr_path, dng)
    argv = [str(a) for a in case.args(ctx)]
    before = snapshot(tmp_path)
    # what the command writes must not depend on these; the outputs of the good inputs excepted
    capfd.readouterr()
    if case.before_work:
        no_work(monkeypatch)
    if case.patch is not None:
        case.patch(monkeypatch)
    try:
        with warnings_as_a_user_sees_them():
            result = runner.invoke(app, argv)
    except NetworkReached:
        pytest.fail("the work started before the bad input was refused")
    finally:
        monkeypatch.undo()

    native = capfd.readouterr()  # what C libraries (LibRaw, ...) write straight to file descriptors 1 and 2
    err = native.err + result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"uncaught {type(result.exception).__name__}: {result.exception}\nstderr:\n{err}"
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == case.code, f"exit {result.exit_code}\nstderr:\n{err}\nstdout:\n{result.stdout}"

    assert "\x1b[" not in err, f"terminal escape sequences on stderr, which is not a terminal: {err!r}"
    # Informational lines (the model, once it is first used, which may be after a refused input of a folder) aside,
    # the error is one line.
    lines = [line for line in err.splitlines() if line.strip() and not PREAMBLE.match(line)]
    assert lines, "no error message on stderr"
    assert len(lines) == 1, f"more than one line on stderr:\n{err}"
    message = lines[0]
    if case.code == 130:
        assert message.strip().lower().startswith("interrupted"), err
    else:
        assert message.startswith("error: "), err
    shown = message.replace(str(tmp_path), "<tmp>")  # the folder's name holds the test's name
    assert case.says.lower() in shown.lower(), f"the message does not mention {case.says!r}: {message}"

    records = [line for line in (native.out + result.stdout).splitlines() if line.strip()]
    assert len(records) == case.records, f"stdout:\n{result.stdout}"
    failed = [r for r in map(json.loads, records) if "error" in r]
    assert len(failed) == (1 if case.records else 0)  # the failed input's record holds the error line's message
    assert all(message.endswith(r["error"]) for r in failed), (failed, message)

    after = snapshot(tmp_path)
    for name in case.written:
        assert name in after, f"{name} was not written (the good input of a mixed run)"
    new = sorted(set(after) - set(before) - set(case.written))
    changed = sorted(k for k in before if k in after and before[k] != after[k])
    gone = sorted(set(before) - set(after))
    assert not new, f"left behind: {new}"
    assert not changed, f"changed: {changed}"
    assert not gone, f"removed: {gone}"
    assert not ctx.marker.exists(), "unpickling the weights ran code"
    for path in case.outside:
        assert not Path(path).exists(), path


def test_every_known_failure_names_a_case() -> None:
    ids = {p.id for p in CASES}
    assert set(TODAY) <= ids and AS_ROOT <= ids, set(TODAY) - ids
    assert len(ids) == len(CASES) >= 40


# --- edge inputs that are not bad: they must work ------------------------------------------------------------------


def la_png(path: Path) -> Path:
    Image.fromarray(_rng().integers(0, 256, (32, 32, 2), dtype=np.uint8), mode="LA").save(path)
    return path


def cmyk(path: Path) -> Path:
    Image.fromarray(_rng().integers(0, 256, (32, 32, 4), dtype=np.uint8), mode="CMYK").save(path)
    return path


def png16(path: Path, channels: int = 1) -> Path:
    import imagecodecs

    shape = (32, 32) if channels == 1 else (32, 32, channels)
    path.write_bytes(imagecodecs.png_encode(_rng().integers(0, 65536, shape, dtype=np.uint16)))
    return path


EDGE = [  # file maker, command, output name, its (height, width, channels), bit depth, alpha kept
    pytest.param(la_png, "denoise", "in_n3.png", (32, 32, 1), 8, True, id="denoise-gray-alpha"),
    pytest.param(cmyk, "denoise", "in_n3.jpg", (32, 32, 3), 8, False, id="denoise-cmyk-jpeg"),
    pytest.param(cmyk, "denoise", "in_n3.tif", (32, 32, 3), 8, False, id="denoise-cmyk-tiff"),
    pytest.param(png16, "denoise", "in_n3.png", (32, 32, 1), 16, False, id="denoise-16-bit-png"),
    pytest.param(la_png, "sr", "in_x2.png", (64, 64, 1), 8, True, id="sr-gray-alpha"),
    pytest.param(png16, "sr", "in_x2.png", (64, 64, 1), 16, False, id="sr-16-bit-png"),
]


@pytest.mark.parametrize("make,command,output,shape,depth,alpha", EDGE)
def test_edge_input_works(make: Callable[[Path], Path], command: str, output: str, shape: tuple[int, int, int],
                          depth: int, alpha: bool, tmp_path: Path, shared: tuple[Path, Path, bytes]) -> None:
    """Gray+alpha, CMYK and 16-bit inputs are valid: written like the input, nothing else left behind."""
    from n3cli.imaging.io import read_image

    nlf, sr_path, _ = shared
    ext = Path(output).suffix
    src = make(tmp_path / f"in{ext}")
    options = ["--sigma", "25", "--weights", nlf] if command == "denoise" else ["--scale", "2", "--weights", sr_path]
    result = runner.invoke(app, [command, str(src), *map(str, options), "--device", "cpu", "--threads", "1"])
    assert result.exit_code == 0, result.stderr
    assert sorted(os.listdir(tmp_path)) == sorted([src.name, output])
    out = read_image(tmp_path / output)
    assert out.pixels.shape == shape and out.bit_depth == depth
    assert (out.alpha is not None) == alpha
    assert np.all(np.isfinite(out.pixels))
