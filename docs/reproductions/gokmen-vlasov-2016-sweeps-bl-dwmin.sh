#!/usr/bin/env bash
# The 2016 panel (a): BL for several dw_min, a 3 x 3 grid, 2 seeds, 6 epochs on full MNIST,
# one training per worker (two workers; at BL 31-100 the fused single-network update is as fast per
# training as lockstep replicas, measured in session 5). Rerun to
# resume. Report, per-epoch export and store go to data/gokmen-vlasov-2016-sweeps-bl-dwmin/.
set -euo pipefail
# The committed results were made with the PyTorch pulse-update backend: reruns equal them draw for
# draw with it (INSITU_BACKEND=auto runs the compiled CPU kernels: the same in distribution, faster).
export INSITU_BACKEND=${INSITU_BACKEND:-torch}
DATA=${DATA:-../shared/datasets}
OUT=${OUT:-runs/gv2016-sweeps-bl-dwmin}
WORKERS=${WORKERS:-2}
LOCKSTEP=${LOCKSTEP:-1}
insitu sweep run docs/reproductions/configs/gv2016-sweeps-bl-dwmin.yaml --out "$OUT" --workers "$WORKERS" --threads 1 \
  --lockstep "$LOCKSTEP" --data-dir "$DATA"
insitu sweep status "$OUT"
DEST=docs/reproductions/data/gokmen-vlasov-2016-sweeps-bl-dwmin
insitu sweep report "$OUT" --out "$DEST" \
  --caption "784-256-128-10 sigmoid, full MNIST (60,000), 6 epochs at lr 0.01 (paper: 30 epochs), batch 1, seeds 0-1"
insitu sweep export "$OUT" --csv "$DEST/epochs.csv" --per-epoch
cp "$OUT/study.sqlite" "$DEST/study.sqlite"
