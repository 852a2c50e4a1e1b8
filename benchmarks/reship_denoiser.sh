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

# Every table of the shipped denoiser on the Gaussian-σ path (Set12, BSD68, ×8, CBSD68) in two lanes, then, one
# thread beside a second lane, the raw table and the three scripts whose figures the prose of the docs quotes.
status=0
bash benchmarks/remeasure_sigma_path.sh "$LOG" || status=1

raw_table() {
    n3 bench --task raw --dataset Set12 --data-dir $DATA \
        --methods noisy,n3net,n3net-est,gat-bm3d,weights:weights/n3net-nlf.safetensors --threads 1 --quiet --force \
        --json results/raw-Set12.json --markdown results/raw-Set12.md
}

scripts() {
    python benchmarks/tiling.py --weights n3net-nlf --tiles 256 128 > "$LOG/tiling.txt"
    python benchmarks/raw_bias.py $DATA/raw/Blackmagic.dng --weights weights/n3net-nlf.safetensors \
        > "$LOG/raw_bias.txt"
    python benchmarks/raw_crops.py $DATA/raw/Blackmagic.dng -o "$LOG/crops.png" --region 960,1800,256,384 \
        --bright 3 --weights weights/n3net-nlf.safetensors > "$LOG/raw_crops.txt"
}

raw_table > "$LOG/raw_table.txt" 2>&1 &
a=$!
scripts > "$LOG/scripts.txt" 2>&1 &
b=$!
wait $a || status=1
wait $b || status=1
[ "$status" -eq 0 ] && python benchmarks/release_weights.py --name n3net-nlf \
    --results results/n3net-BSD68.json results/n3net-Set12.json
[ "$status" -eq 0 ] && echo "done: figures in results/ and $LOG" || echo "a measurement failed: see $LOG/*.txt" >&2
exit "$status"
