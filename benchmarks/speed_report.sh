#!/usr/bin/env bash
# Issue #48's speed benchmark in one run: DnCNN-17 and N3Net per megapixel at 481×321, 1024² and 4096² (gray, fp32 and
# bf16), the training step of both (fp32 and bf16), peak memory of one forward pass, the largest size through the
# command's tiles, and end to end `n3 denoise` on a 24 MP colour photo and `n3 raw-denoise` on Blackmagic.dng.
# Stop other work first (2 cores: any other process distorts every figure). About an hour on 2 threads of an AMD
# EPYC; SIZES="481x321 1024x1024" makes it shorter.
#   bash benchmarks/speed_report.sh [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${1:-2}"
SIZES="${SIZES:-481x321 1024x1024 4096x4096}"
# shellcheck disable=SC2086
python benchmarks/speed.py --threads "$THREADS" --sizes $SIZES --precision fp32 bf16 --no-old-block --repeat 2 \
    --steps 3 --train-precision fp32 bf16
# One untiled pass per model and size, each in its own process, for the peak memory: with malloc's defaults, since
# with freed memory kept (as the n3 command runs, which tiles) N3Net's untiled 4096² pass outgrows 24 GB.
# shellcheck disable=SC2086
N3_MALLOC=system python benchmarks/forward.py --threads "$THREADS" --sizes $SIZES --repeat 1
# The largest size the way n3 denoise runs it: automatic tiles, freed memory kept, each model in its own process.
python benchmarks/forward.py --threads "$THREADS" --sizes "${SIZES##* }" --repeat 1 --tiled
python benchmarks/end_to_end.py --threads "$THREADS"
