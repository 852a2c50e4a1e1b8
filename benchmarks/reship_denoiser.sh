#!/usr/bin/env bash
# Ship a training run's weight average as the default denoiser `n3net-nlf`, then measure again every README/docs
# figure that depends on it, in two lanes of one thread each (the 2 cores of the development machine).
#
#   bash benchmarks/reship_denoiser.sh [RUN] [LOGDIR]     # RUN defaults to runs/denoise-nlf-adamw-fresh
#
# Overwrites weights/n3net-nlf.safetensors and its manifest entry (git holds the previous ones: compare with
# `git diff results/`, and `git checkout weights results` to keep the old model); the release step
# (benchmarks/release_weights.py) registers the file and then records the measured figures of results/*.json.
# Afterwards: `python benchmarks/readme_tables.py` refreshes the tables of README.md and docs/*.md; the
# figures of the three scripts at the end (tiling, raw mean shift, raw crops) are printed to LOGDIR for the prose of
# docs/results.md and docs/raw.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="${1:-runs/denoise-nlf-adamw-fresh}"
LOG="${2:-/tmp/reship}"
mkdir -p "$LOG"
export OMP_NUM_THREADS=1
DATA=../shared/data

n3 weights export "$RUN/last.pt" -o weights/n3net-nlf.safetensors --name n3net-nlf --force \
    --precise-bn 100 --threads 2 --ema > "$LOG/export.txt" 2>&1
python benchmarks/release_weights.py weights/n3net-nlf.safetensors --default >> "$LOG/export.txt"

# Lanes balanced by time measured in session 27 (one thread each): lane A ≈ 45 min (BSD68 at 4 σ 29, CBSD68
# opponent 16), lane B ≈ 45 min (Set12 at 4 σ 4, the raw table 16, the ×8 ensemble 8, the three scripts 2, CBSD68
# channel by channel 16).
lane_a() {
    n3 bench --dataset BSD68 --data-dir $DATA --sigma 15,25,50,70 --methods n3net --threads 1 --quiet \
        --json results/n3net-BSD68.json --markdown results/n3net-BSD68.md
    n3 bench --dataset CBSD68 --data-dir $DATA --sigma 25 --methods n3net --threads 1 --quiet \
        --json results/color-CBSD68.json --markdown results/color-CBSD68.md
}

lane_b() {
    n3 bench --dataset Set12 --data-dir $DATA --sigma 15,25,50,70 --methods n3net --threads 1 --quiet \
        --json results/n3net-Set12.json --markdown results/n3net-Set12.md
    n3 bench --task raw --dataset Set12 --data-dir $DATA \
        --methods noisy,n3net,n3net-est,gat-bm3d,weights:weights/n3net-nlf.safetensors --threads 1 --quiet \
        --json results/raw-Set12.json --markdown results/raw-Set12.md
    n3 bench --dataset Set12 --data-dir $DATA --sigma 25 --methods n3net --ensemble --threads 1 --quiet \
        --json results/n3net-x8-Set12.json --markdown results/n3net-x8-Set12.md
    python benchmarks/tiling.py --weights n3net-nlf --tiles 256 128 > "$LOG/tiling.txt"
    python benchmarks/raw_bias.py $DATA/raw/Blackmagic.dng --weights weights/n3net-nlf.safetensors \
        > "$LOG/raw_bias.txt"
    python benchmarks/raw_crops.py $DATA/raw/Blackmagic.dng -o "$LOG/crops.png" --region 960,1800,256,384 \
        --bright 3 --weights weights/n3net-nlf.safetensors > "$LOG/raw_crops.txt"
    n3 bench --dataset CBSD68 --data-dir $DATA --sigma 25 --methods n3net --color rgb --threads 1 --quiet \
        --json results/color-rgb-CBSD68.json --markdown results/color-rgb-CBSD68.md
}

lane_a > "$LOG/lane_a.txt" 2>&1 &
a=$!
lane_b > "$LOG/lane_b.txt" 2>&1 &
b=$!
status=0
wait $a || status=1
wait $b || status=1
[ "$status" -eq 0 ] && python benchmarks/release_weights.py --name n3net-nlf \
    --results results/n3net-BSD68.json results/n3net-Set12.json
[ "$status" -eq 0 ] && echo "done: figures in results/ and $LOG" || echo "a lane failed: see $LOG/lane_*.txt" >&2
exit "$status"
