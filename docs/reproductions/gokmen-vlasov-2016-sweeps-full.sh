#!/usr/bin/env bash
# Reproduces the full-MNIST sweeps of docs/reproductions/gokmen-vlasov-2016-sweeps.md: 40 trainings
# of the 784-256-128-10 sigmoid network at batch 1, 6 epochs on all 60,000 MNIST images, 2 seeds,
# trained as replicas in lockstep (4 groups of 10 points, two workers; about 2 hours on 2 cores),
# and floating point on the same budget. Interrupted? Run it again: finished points are kept and
# groups resume from their checkpoints. More values per parameter: add them to the study file and
# rerun (the script passes --extend when the store exists; only the new points train).
set -euo pipefail
# The committed results were made with the PyTorch pulse-update backend: reruns equal them draw for
# draw with it (INSITU_BACKEND=auto runs the compiled CPU kernels: the same in distribution, faster).
export INSITU_BACKEND=${INSITU_BACKEND:-torch}
DATA=${DATA:-../shared/datasets}
OUT=${OUT:-runs/gv2016-sweeps-full}
WORKERS=${WORKERS:-2}
LOCKSTEP=${LOCKSTEP:-10}
extend=""
if [ -f "$OUT/study.sqlite" ]; then extend=--extend; fi  # harmless when the study file is unchanged
insitu sweep run docs/reproductions/configs/gv2016-sweeps-full.yaml --out "$OUT" --workers "$WORKERS" --threads 1 \
  --lockstep "$LOCKSTEP" --data-dir "$DATA" $extend
insitu sweep status "$OUT"
DEST=docs/reproductions/data/gokmen-vlasov-2016-sweeps-full
insitu sweep report "$OUT" --out "$DEST" \
  --caption "784-256-128-10 sigmoid, full MNIST (60,000), 6 epochs at lr 0.01 (paper: 30 epochs), batch 1, seeds 0-1"
insitu sweep export "$OUT" --csv "$DEST/epochs.csv" --per-epoch
cp "$OUT/study.sqlite" "$DEST/study.sqlite"
# Floating point on the same budget (6 epochs, lr 0.01, full MNIST), seeds 0 and 1.
resume() { if [ -f "$1/checkpoint.pt" ]; then echo --resume; fi; }
for seed in 0 1; do
  insitu train --preset floating-point --dataset mnist --data-dir "$DATA" --epochs 6 --lr 0.01 --lr-milestones none \
    --seed $seed --threads 1 --no-progress --out "$OUT-fp-s$seed" $(resume "$OUT-fp-s$seed")
  cp "$OUT-fp-s$seed/results.json" "$DEST/floating-point-seed$seed.json"
done
# Test error against each parameter after epochs 1, 2, 4 and 6, floating point at the same epochs.
python docs/reproductions/gokmen_vlasov_2016_sweeps_epochs.py "$DEST/epochs.csv" \
  --fp "$DEST/floating-point-seed0.json" "$DEST/floating-point-seed1.json" \
  --out "$DEST/knees_by_epoch.png" > "$DEST/knees_by_epoch.json"
