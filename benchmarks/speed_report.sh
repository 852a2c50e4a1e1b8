#!/usr/bin/env bash
# Issue #48's speed benchmark in one run: DnCNN-17 and N3Net per megapixel at 481×321, 1024² and 4096² (gray, fp32 and
# bf16), the training step of both (fp32 and bf16), peak memory of one untiled forward pass per size, the largest
# size the way `n3 denoise` runs it (automatic tiles), and end to end `n3 denoise` on a 24 MP colour photo and
# `n3 raw-denoise` on Blackmagic.dng.
# Stop other work first (2 cores: any other process distorts every figure). About 30 minutes on 2 threads of an AMD
# EPYC.
#   bash benchmarks/speed_report.sh [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${1:-2}"
SMALL="${SMALL:-481x321 1024x1024}"
LARGE="${LARGE:-4096x4096}"
# The small sizes with the models alternating in one process (min of 2 after a warm-up), and the training steps. The
# large size is not run here: an untiled 4096² pass in a process that keeps freed memory (as the n3 command does)
# outgrows 24 GB, and n3 never makes one (it tiles).
# shellcheck disable=SC2086
python benchmarks/speed.py --threads "$THREADS" --sizes $SMALL --precision fp32 bf16 --no-old-block --repeat 2 \
    --steps 3 --train-precision fp32 bf16
# One untiled pass per model and size, each in its own process, for the peak memory (linear in the pixel count?):
# with malloc's defaults, for the reason above.
for precision in fp32 bf16; do
    # shellcheck disable=SC2086
    N3_MALLOC=system python benchmarks/forward.py --threads "$THREADS" --sizes $SMALL $LARGE --repeat 1 \
        --precision "$precision"
done
# The large size the way n3 denoise runs it: automatic tiles, freed memory kept, each model in its own process.
for precision in fp32 bf16; do
    python benchmarks/forward.py --threads "$THREADS" --sizes "$LARGE" --repeat 1 --tiled --precision "$precision"
done
python benchmarks/end_to_end.py --threads "$THREADS"
