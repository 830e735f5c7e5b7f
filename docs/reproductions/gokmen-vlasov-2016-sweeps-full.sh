#!/usr/bin/env bash
# Reproduces the full-MNIST sweeps of docs/reproductions/gokmen-vlasov-2016-sweeps.md: 56 trainings
# of the 784-256-128-10 sigmoid network at batch 1, 6 epochs on all 60,000 MNIST images, 2 seeds,
# trained as replicas in lockstep (groups of up to 10 points, two workers; about 2.5 hours on
# 2 cores). Interrupted? Run it again: finished points are kept and groups resume from their
# checkpoints. (Session 4 ran the 3-4 first values of each parameter, then the others with
# `--extend`; one run of this script trains the same 56 points.)
set -euo pipefail
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
# Test error against each parameter after epochs 1, 2, 4 and 6, with floating point at the same
# epochs (the 30-epoch floating-point run of gokmen-vlasov-2016.md: lr 0.01 up to epoch 10).
python docs/reproductions/gokmen_vlasov_2016_sweeps_epochs.py "$DEST/epochs.csv" \
  --fp docs/reproductions/data/gokmen-vlasov-2016/gv2016-fp.json --out "$DEST/knees_by_epoch.png" > "$DEST/knees_by_epoch.json"
