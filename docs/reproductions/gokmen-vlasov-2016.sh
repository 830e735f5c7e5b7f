#!/usr/bin/env bash
# Reproduces docs/reproductions/gokmen-vlasov-2016.md: the 784-256-128-10 sigmoid network on
# MNIST at batch 1, lr 0.01 halved after epochs 10 and 20, 30 epochs, for the floating-point
# network, the 2016 RPU, and the two ablations (RPU device with ideal IO, ideal device with the
# RPU IO). Each run takes 10-45 minutes on one core; they are independent (run them in parallel
# on a machine with more cores). Interrupted runs continue with the same command plus --resume.
set -euo pipefail
# The committed results were made with the PyTorch pulse-update backend: reruns equal them draw for
# draw with it (INSITU_BACKEND=auto runs the compiled CPU kernels: the same in distribution, faster).
export INSITU_BACKEND=${INSITU_BACKEND:-torch}
DATA=${DATA:-../shared/datasets}
OUT=${OUT:-runs}
# --per-tile-update: the update path these committed runs were made with (reruns are draw for
# draw the same); without it insitu fuses the layers' updates (faster, the same in distribution).
common=(--dataset mnist --data-dir "$DATA" --epochs 30 --batch-size 1 --lr 0.01 --lr-milestones 10,20 --threads 1 --no-progress
        --per-tile-update)
insitu train --preset floating-point "${common[@]}" --out "$OUT/gv2016-fp"
insitu train --preset gokmen-vlasov-2016 "${common[@]}" --out "$OUT/gv2016-rpu"
insitu train --tile-config docs/reproductions/configs/gv2016-io-only.yaml "${common[@]}" --out "$OUT/gv2016-io-only"
insitu train --tile-config docs/reproductions/configs/gv2016-device-only.yaml "${common[@]}" --out "$OUT/gv2016-device-only"
insitu train --preset gokmen-vlasov-2016 "${common[@]}" --seed 1 --out "$OUT/gv2016-rpu-s1"
insitu train --preset gokmen-2017-cnn-nm-bm "${common[@]}" --out "$OUT/gv2016-rpu-nm-bm"
insitu compare "$OUT/gv2016-fp" "$OUT/gv2016-rpu" "$OUT/gv2016-device-only" "$OUT/gv2016-io-only" "$OUT/gv2016-rpu-s1" "$OUT/gv2016-rpu-nm-bm" \
  --label "floating point" --label "RPU (2016 spec)" --label "RPU device, ideal IO" --label "ideal device, RPU IO" \
  --label "RPU (2016 spec), seed 1" --label "RPU + noise/bound management" \
  --title "784-256-128-10 sigmoid MLP, MNIST, batch 1" --out docs/reproductions/gokmen-vlasov-2016.png
