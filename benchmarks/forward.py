"""Forward-pass time and peak memory of N3Net vs DnCNN-17 on gray images (CPU).

Each measurement runs in a fresh subprocess so that its peak resident memory (ru_maxrss) is its own;
the figure reported is the peak minus the resident memory just before the forward pass. ``--tiled``: the image
goes through :func:`n3cli.api.run` with the automatic tiles of ``n3 denoise`` (tiles sized to a quarter of the
free memory, overlapping), which is how the command runs any image, instead of one untiled pass.
Usage: python benchmarks/forward.py [--sizes 481x321 512x512 1024x1024] [--threads 2] [--repeat 3] [--tiled]
[--precision fp32|bf16]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def measure(arch: str, h: int, w: int, threads: int, repeat: int, query_tile: int | None, plain: bool,
            tiled: bool = False, precision: str = "fp32") -> dict:
    import torch

    from n3cli.api import Restorer, prepare_for_inference, run
    from n3cli.devices import keep_freed_memory
    from n3cli.engine import autocast
    from n3cli.nn.nets import dncnn, n3net
    from n3cli.weights import ModelInfo

    keep_freed_memory()  # as the n3 command runs (N3_MALLOC=system: malloc's defaults)
    torch.set_num_threads(threads)
    model = (n3net() if arch == "n3net" else dncnn()).eval()
    if not plain:  # what n3 denoise runs: BN folded, channels-last
        model = prepare_for_inference(model, torch.device("cpu"))
    if query_tile is not None:
        for m in model.modules():
            if hasattr(m, "query_tile"):
                m.query_tile = query_tile
    x = torch.rand(1, 1, h, w)
    if not plain:
        x = x.contiguous(memory_format=torch.channels_last)
    restorer = Restorer(model, ModelInfo(arch), torch.device("cpu"), precision=precision)
    base = _rss_mb()
    times = []
    torch.set_flush_denormal(True)  # as n3 runs its models (run() sets it itself)
    faults = []  # GB of 4 KB pages the kernel mapped in during each pass (memory freed and not reused)
    for _ in range(repeat):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        if tiled:
            run(restorer, x)
        else:
            with torch.inference_mode(), autocast(precision, torch.device("cpu")):
                model(x)
        times.append(time.perf_counter() - t0)
        faults.append(round((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) * 4096 / 2**30, 2))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"arch": arch, "size": f"{w}x{h}", "threads": threads, "seconds": min(times),
            "s_per_mp": round(min(times) / (h * w / 1e6), 3), "peak_mb": round(peak - base, 1), "faults_gb": faults,
            "query_tile": query_tile, "plain": plain, "tiled": tiled, "precision": precision}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", nargs="+", default=["481x321", "512x512", "1024x1024"])
    ap.add_argument("--archs", nargs="+", default=["dncnn", "n3net"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--query-tile", type=int, default=None)
    ap.add_argument("--plain", action="store_true", help="no BN folding / channels-last (the plain modules)")
    ap.add_argument("--tiled", action="store_true", help="through n3cli.api.run with the automatic tiles")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="of the local CNNs")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        arch, h, w, qt = args.child
        print(json.dumps(measure(arch, int(h), int(w), args.threads, args.repeat, None if qt == "-" else int(qt),
                                 args.plain, args.tiled, args.precision)))
        return
    rows = []
    for size in args.sizes:
        w, h = (int(v) for v in size.split("x"))
        for arch in args.archs:
            qt = "-" if args.query_tile is None else str(args.query_tile)
            out = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--repeat",
                                  str(args.repeat), "--child", arch, str(h), str(w), qt]
                                 + (["--plain"] if args.plain else []) + (["--tiled"] if args.tiled else [])
                                 + ["--precision", args.precision],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout))
            print(json.dumps(rows[-1]), flush=True)
    by = {(r["size"], r["arch"]): r for r in rows}
    for size in args.sizes:
        if (size, "n3net") in by and (size, "dncnn") in by:
            ratio = by[(size, "n3net")]["seconds"] / by[(size, "dncnn")]["seconds"]
            print(f"{size}: N3Net / DnCNN-17 time ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
