#!/usr/bin/env bash
# Preliminary comparison of the conditions of Gokmen, Onen & Haensch 2017 (not the reproduction):
# the paper's CNN on a 10,000-image MNIST subset, batch 1, lr 0.01, 3 epochs, `summed` update
# mode (exact coincidence counts per image, patch order within an image not simulated).
set -euo pipefail
# The committed results were made with the PyTorch pulse-update backend: reruns equal them draw for
# draw with it (INSITU_BACKEND=auto runs the compiled CPU kernels: the same in distribution, faster).
export INSITU_BACKEND=${INSITU_BACKEND:-torch}
DATA=${DATA:-../shared/datasets}
OUT=${OUT:-runs}
common=(--model cnn-2017 --activation tanh --dataset mnist --data-dir "$DATA" --subset 10000 --epochs 3
        --batch-size 1 --lr 0.01 --lr-milestones none --update-mode summed --threads 1 --no-progress)
insitu train --preset floating-point "${common[@]}" --out "$OUT/cnn17-fp"
insitu train --preset gokmen-2017-cnn-baseline "${common[@]}" --out "$OUT/cnn17-baseline"
insitu train --preset gokmen-2017-cnn-nm-bm "${common[@]}" --out "$OUT/cnn17-nm-bm"
insitu train --preset gokmen-2017-cnn-nm-bm-um "${common[@]}" --out "$OUT/cnn17-nm-bm-um"
insitu train --preset gokmen-2017-cnn-nm-bm-um --conv-preset gokmen-2017-cnn-nm-bm-um-4d "${common[@]}" --out "$OUT/cnn17-nm-bm-um-4d"
insitu compare "$OUT/cnn17-fp" "$OUT/cnn17-baseline" "$OUT/cnn17-nm-bm" "$OUT/cnn17-nm-bm-um" "$OUT/cnn17-nm-bm-um-4d" \
  --label "floating point" --label "RPU baseline" --label "+ noise/bound mgmt" --label "+ update mgmt" --label "+ 4 devices/weight on convs" \
  --title "CNN of Gokmen et al. 2017, 10k MNIST images, batch 1 (preliminary)" --out docs/reproductions/gokmen-2017-cnn-preliminary.png
