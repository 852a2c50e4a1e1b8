#!/usr/bin/env bash
# The accuracy cost of bfloat16 convolutions (issue #48: adopt as the CPU default only if it costs ≤ 0.02 dB on Set12
# and BSD68 at σ 25 and on Set5 ×2). Runs the bf16 side; the fp32 side is results/n3net-Set12.json,
# results/n3net-BSD68.json and results/sr-Set5.json (the same noisy images: n3 bench seeds them per image and σ).
#   bash benchmarks/precision_ab.sh [LOGDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
LOG="${1:-/tmp/precision}"
mkdir -p "$LOG"
export OMP_NUM_THREADS=1
DATA=../shared/data
n3 bench --dataset BSD68 --data-dir $DATA --sigma 25 --methods n3net --precision bf16 --threads 1 --quiet --force \
    --json results/bf16-BSD68.json --markdown results/bf16-BSD68.md > "$LOG/a.txt" 2>&1 &
a=$!
( n3 bench --dataset Set12 --data-dir $DATA --sigma 25 --methods n3net --precision bf16 --threads 1 --quiet --force \
    --json results/bf16-Set12.json --markdown results/bf16-Set12.md
  n3 bench --task sr --dataset Set5 --data-dir $DATA --scale 2 --methods n3net --precision bf16 --threads 1 --quiet --force \
    --json results/bf16-sr-Set5.json --markdown results/bf16-sr-Set5.md ) > "$LOG/b.txt" 2>&1 &
b=$!
status=0
wait $a || status=1
wait $b || status=1
exit "$status"
