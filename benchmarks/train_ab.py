"""The training step of N3Net at this checkout against the same step at another git revision, in one process.

Whole-step figures from separate processes move by ±3 % on a shared 2-core machine, more than most single changes
to the N3 block gain. Here ``n3cli/nn`` of revision REV is unpacked into a temporary folder as a package of its own
(it imports only itself and torch) and DnCNN-17, this N3Net and REV's N3Net alternate step by step for ``--rounds``
rounds (batch 16 × 80², 3 input planes, fp32, AdamW, freed memory kept as ``n3 train`` does); medians and minima,
and each N3Net's ratio to DnCNN-17.
Usage: python benchmarks/train_ab.py --against REV [--threads 2] [--rounds 10]
"""

from __future__ import annotations

import argparse
import importlib
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType

import torch
from speed import times_of, training_step  # type: ignore[import-not-found]

from n3cli.devices import cpu_name, keep_freed_memory


def nets_at(rev: str, folder: Path) -> ModuleType:
    """``n3cli.nn.nets`` as of git revision ``rev``, importable as ``n3nn_<rev>.nets``."""
    name = "n3nn_" + "".join(ch if ch.isalnum() else "_" for ch in rev)
    root = Path(__file__).resolve().parents[1]  # the checkout this script belongs to, wherever it is run from
    blob = subprocess.run(["git", "archive", rev, "n3cli/nn"], cwd=root, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(folder, filter="data")
    (folder / "n3cli" / "nn").rename(folder / name)
    sys.path.insert(0, str(folder))
    return importlib.import_module(f"{name}.nets")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", required=True, help="git revision to compare with (e.g. HEAD~1)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    with tempfile.TemporaryDirectory() as tmp:
        old = nets_at(args.against, Path(tmp))
        fns = {"DnCNN-17": training_step("dncnn", None), "N3Net, this checkout": training_step("n3net", None),
               f"N3Net, {args.against}": training_step("n3net", None, nets=old)}
        times = times_of(fns, args.rounds, warmup=2)
    print(f"CPU {cpu_name()}, torch {torch.__version__}, {args.threads} threads, {args.rounds} rounds")
    base_med, base_min = statistics.median(times["DnCNN-17"]), min(times["DnCNN-17"])
    for name, ts in times.items():
        med, low = statistics.median(ts), min(ts)
        print(f"{name:28s} median {med:6.3f} s  min {low:6.3f} s  ratio {med / base_med:.3f} (median) "
              f"{low / base_min:.3f} (min)")


if __name__ == "__main__":
    main()
