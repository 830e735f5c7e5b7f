#!/usr/bin/env bash
# Reproduces docs/reproductions/gokmen-vlasov-2016-sweeps.md: reduced device-spec sweeps of
# Gokmen & Vlasov 2016 (40 trainings of the 784-256-128-10 network at batch 1 on 8,000 MNIST
# images for 2 epochs; about 35-45 CPU-minutes on one core), a floating-point reference, and a
# check of five points at 4 epochs (about 10 more minutes). Interrupted? Run it again: finished
# points are kept, the others resume from their checkpoints.
set -euo pipefail
# The committed results were made with the PyTorch pulse-update backend: reruns equal them draw for
# draw with it (INSITU_BACKEND=auto runs the compiled CPU kernels: the same in distribution, faster).
export INSITU_BACKEND=${INSITU_BACKEND:-torch}
DATA=${DATA:-../shared/datasets}
OUT=${OUT:-runs/gv2016-sweeps}
WORKERS=${WORKERS:-1}
resume() { if [ -f "$1/checkpoint.pt" ]; then echo --resume; fi; }  # a rerun continues the single runs too
insitu sweep run docs/reproductions/configs/gv2016-sweeps.yaml --out "$OUT" --workers "$WORKERS" --threads 1 --data-dir "$DATA"
insitu sweep status "$OUT"
DEST=docs/reproductions/data/gokmen-vlasov-2016-sweeps
insitu sweep report "$OUT" --out "$DEST" \
  --caption "784-256-128-10, MNIST 8,000-image subset, 2 epochs (paper: 60,000, 30 epochs), batch 1, seeds 0-1"
insitu sweep export "$OUT" --csv "$DEST/epochs.csv" --per-epoch
cp "$OUT/study.sqlite" "$DEST/study.sqlite"
# Floating point on the same budget (2 epochs, 8,000 images), for reference.
insitu train --preset floating-point --dataset mnist --data-dir "$DATA" --subset 8000 --epochs 2 --lr 0.01 --lr-milestones none \
  --threads 1 --no-progress --out "$OUT-fp" $(resume "$OUT-fp")
cp "$OUT-fp/results.json" "$DEST/floating-point-2-epochs.json"
# The check at 4 epochs: baseline and four points of the study, one seed, and floating point.
insitu sweep run docs/reproductions/configs/gv2016-sweeps-longer.yaml --out "$OUT-longer" --workers "$WORKERS" --threads 1 --data-dir "$DATA"
insitu sweep report "$OUT-longer" --out "$DEST/longer"
cp "$OUT-longer/study.sqlite" "$DEST/longer/study.sqlite"
insitu train --preset floating-point --dataset mnist --data-dir "$DATA" --subset 8000 --epochs 4 --lr 0.01 --lr-milestones none \
  --threads 1 --no-progress --out "$OUT-fp4" $(resume "$OUT-fp4")
cp "$OUT-fp4/results.json" "$DEST/floating-point-4-epochs.json"
