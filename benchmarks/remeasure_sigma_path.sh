#!/usr/bin/env bash
# Measure again every table of the shipped denoiser that goes through the Gaussian-σ path of api.denoise (Set12,
# BSD68 and CBSD68), after a change to that path. (One-σ models such as the authors' checkpoints take neither the
# σ estimate nor the mean-preserving step, and their images fit in one tile: their tables do not move.)
# Two lanes of one thread each (the 2 cores of the development machine); raw (NLF) and SR tables do not go
# through this path.
#
#   bash benchmarks/remeasure_sigma_path.sh [LOGDIR]
#
# Afterwards: `python benchmarks/readme_tables.py` refreshes README.md and docs/*.md, and
# `python benchmarks/release_weights.py --name n3net-nlf --results results/n3net-BSD68.json results/n3net-Set12.json`
# copies the new figures into the registry (git diff results/ shows what moved).
set -euo pipefail
cd "$(dirname "$0")/.."
LOG="${1:-/tmp/remeasure}"
mkdir -p "$LOG"
export OMP_NUM_THREADS=1
DATA=../shared/data

lane_a() {
    n3 bench --dataset BSD68 --data-dir $DATA --sigma 15,25,50,70 --methods n3net --threads 1 --quiet --force \
        --json results/n3net-BSD68.json --markdown results/n3net-BSD68.md
    n3 bench --dataset CBSD68 --data-dir $DATA --sigma 25 --methods n3net --threads 1 --quiet --force \
        --json results/color-CBSD68.json --markdown results/color-CBSD68.md
}

lane_b() {
    n3 bench --dataset Set12 --data-dir $DATA --sigma 15,25,50,70 --methods n3net --threads 1 --quiet --force \
        --json results/n3net-Set12.json --markdown results/n3net-Set12.md
    n3 bench --dataset Set12 --data-dir $DATA --sigma 25 --methods n3net --ensemble --threads 1 --quiet --force \
        --json results/n3net-x8-Set12.json --markdown results/n3net-x8-Set12.md
    n3 bench --dataset CBSD68 --data-dir $DATA --sigma 25 --methods n3net --color rgb --threads 1 --quiet --force \
        --json results/color-rgb-CBSD68.json --markdown results/color-rgb-CBSD68.md
}

lane_a > "$LOG/lane_a.txt" 2>&1 &
a=$!
lane_b > "$LOG/lane_b.txt" 2>&1 &
b=$!
status=0
wait $a || status=1
wait $b || status=1
[ "$status" -eq 0 ] && echo "done: figures in results/ and $LOG" || echo "a lane failed: see $LOG/lane_*.txt" >&2
exit "$status"
