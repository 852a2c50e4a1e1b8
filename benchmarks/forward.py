"""Forward-pass time and peak memory of N3Net vs DnCNN-17 on gray images (CPU).

Each measurement runs in a fresh subprocess so that its peak resident memory (ru_maxrss) is its own;
the figure reported is the peak minus the resident memory just before the forward pass.
Usage: python benchmarks/forward.py [--sizes 481x321 512x512 1024x1024] [--threads 2] [--repeat 3]
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


def measure(arch: str, h: int, w: int, threads: int, repeat: int, query_tile: int | None, plain: bool) -> dict:
    import torch

    from n3cli.api import prepare_for_inference
    from n3cli.devices import keep_freed_memory
    from n3cli.nn.nets import dncnn, n3net

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
    base = _rss_mb()
    times = []
    with torch.inference_mode():
        for _ in range(repeat):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"arch": arch, "size": f"{w}x{h}", "threads": threads, "seconds": min(times),
            "peak_mb": round(peak - base, 1), "query_tile": query_tile, "plain": plain}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", nargs="+", default=["481x321", "512x512", "1024x1024"])
    ap.add_argument("--archs", nargs="+", default=["dncnn", "n3net"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--query-tile", type=int, default=None)
    ap.add_argument("--plain", action="store_true", help="no BN folding / channels-last (the plain modules)")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        arch, h, w, qt = args.child
        print(json.dumps(measure(arch, int(h), int(w), args.threads, args.repeat, None if qt == "-" else int(qt),
                                 args.plain)))
        return
    rows = []
    for size in args.sizes:
        w, h = (int(v) for v in size.split("x"))
        for arch in args.archs:
            qt = "-" if args.query_tile is None else str(args.query_tile)
            out = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--repeat",
                                  str(args.repeat), "--child", arch, str(h), str(w), qt]
                                 + (["--plain"] if args.plain else []),
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
