"""End-to-end time and peak memory of the commands a user runs on big inputs (issue #48, item 6).

* ``n3 denoise`` on a 24-megapixel (6000×4000) colour camera photo. Without ``--photo`` one is made from
  ``examples/astronaut.png``: simulated camera noise (``n3cli.imaging.camera``, one fixed mid-ISO camera, JPEG q 90)
  on the 256² image, then mirrored and tiled to 6000×4000 and stored as JPEG q 95, so that the tool takes it for
  the camera photo it is (its routing decides the model, as for any photo).
* ``n3 raw-denoise`` on ``Blackmagic.dng`` (9 MP) when ``--raw`` exists (default: the shared data folder).

Each command runs in its own process (wall time, and the child's peak resident memory from ``wait4``), on
``--threads`` threads. Usage: python benchmarks/end_to_end.py [--threads 2] [--photo P] [--raw R] [--skip-raw]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from n3cli.devices import cpu_name
from n3cli.imaging.camera import Camera, camera_noisy

ROOT = Path(__file__).resolve().parents[1]
#: One camera, fixed for repeatability: NLF inside Brooks et al.'s range, in-camera noise reduction, sharpening
#: and JPEG, so that its noise is coarse as in real camera JPEGs (std ≈ 4 levels, of which the wavelet estimate
#: sees ≈ 1, as on PolyU-val's photos).
CAMERA = Camera(rgb2cam=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)), rgb_gain=1.25, red_gain=2.1,
                blue_gain=1.7, a=1e-3, b=2e-6, sharpen=0.5, nr_luma=1.0, nr_chroma=2.0, jpeg_quality=90)


def make_photo(path: Path, width: int = 6000, height: int = 4000) -> None:
    clean = np.asarray(Image.open(ROOT / "examples" / "astronaut.png").convert("RGB"), dtype=np.float32) / 255
    noisy = camera_noisy(torch.from_numpy(clean.transpose(2, 0, 1).copy()), CAMERA, torch.Generator().manual_seed(0))
    tile = np.round(noisy.numpy().transpose(1, 2, 0) * 255).astype(np.uint8)
    tile = np.concatenate([tile, tile[:, ::-1]], 1)
    tile = np.concatenate([tile, tile[::-1]], 0)
    reps = (-(-height // tile.shape[0]), -(-width // tile.shape[1]), 1)
    Image.fromarray(np.tile(tile, reps)[:height, :width]).save(path, quality=95)


def timed(cmd: list[str]) -> tuple[float, float, int, str]:
    """Wall seconds, peak resident MB of the child, exit status and its stderr's last lines."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - t0, usage.ru_maxrss / 1024, proc.returncode, "\n".join(err.splitlines()[-3:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--photo", type=Path, help="a colour photo to denoise (default: a 24 MP one made here)")
    ap.add_argument("--raw", type=Path, default=ROOT.parent / "shared" / "data" / "raw" / "Blackmagic.dng")
    ap.add_argument("--skip-raw", action="store_true")
    args = ap.parse_args()
    n3 = shutil.which("n3") or sys.exit("n3 is not installed (pip install -e .)")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    print(f"CPU {cpu_name()}, {args.threads} threads, torch {torch.__version__}, commit {commit.strip()}")
    with tempfile.TemporaryDirectory() as tmp:
        photo = args.photo
        if photo is None:
            photo = Path(tmp) / "photo24.jpg"
            make_photo(photo)
        w, h = Image.open(photo).size
        runs = [(f"n3 denoise, {w}×{h} colour photo ({w * h / 1e6:.1f} MP)",
                 [n3, "denoise", str(photo), "-o", str(Path(tmp) / "out.png"), "--threads", str(args.threads)])]
        if not args.skip_raw and args.raw.exists():
            runs.append((f"n3 raw-denoise, {args.raw.name}",
                         [n3, "raw-denoise", str(args.raw), "-o", str(Path(tmp) / "raw.png"),
                          "--threads", str(args.threads)]))
        for name, cmd in runs:
            seconds, peak, code, tail = timed(cmd)
            print(f"{name}: {seconds:.1f} s ({seconds / 60:.2f} min), peak {peak:.0f} MB, exit {code}")
            print("    " + tail.replace("\n", "\n    "))


if __name__ == "__main__":
    main()
