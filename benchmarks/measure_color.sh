#!/usr/bin/env bash
# Every figure the docs give for a candidate colour model (`n3net-color`), without registering it: the real pairs
# (as `n3 denoise` runs with no flags), CBSD68 σ 25 and Kodak24 σ 15 / 25 / 50 with the level given, blind on the
# first 20 CBSD68 images (clean, σ 3, σ 25: what a blind default does to good photos), and the mean colour shift.
# Two lanes of one thread each (the 2 cores of the development machine).
#
#   bash benchmarks/measure_color.sh WEIGHTS.safetensors [LOGDIR]
#
# A training checkpoint is exported first: n3 weights export RUN/best.pt -o W --name n3net-color --precise-bn 40
set -euo pipefail
cd "$(dirname "$0")/.."
W="$1"
LOG="${2:-/tmp/measure-color}"
mkdir -p "$LOG"
export OMP_NUM_THREADS=1
DATA=../shared/data
bench() { n3 bench --data-dir $DATA --threads 1 --quiet --force "$@"; }

lane1() {
    bench --task real --dataset PolyU-val --methods noisy,weights:"$W" --markdown "$LOG/polyu.md"
    bench --dataset CBSD68 --sigma 0,3,25 --limit 20 --methods auto:"$W" --markdown "$LOG/cbsd68-blind.md"
}
lane2() {
    bench --dataset CBSD68 --sigma 25 --methods weights:"$W" --markdown "$LOG/cbsd68-25.md"
    bench --dataset Kodak24 --sigma 15,25,50 --methods weights:"$W" --markdown "$LOG/kodak24.md"
    python benchmarks/color_model.py --weights "$W" --skip time --threads 1 > "$LOG/shift.txt"
}
lane1 > "$LOG/lane1.txt" 2>&1 &
one=$!
lane2 > "$LOG/lane2.txt" 2>&1 || status=1
wait $one || status=1
cat "$LOG"/*.md "$LOG/shift.txt"
exit "${status:-0}"
