#!/usr/bin/env bash
# Reproduction of Gokmen, Onen & Haensch 2017 (Front. Neurosci. 11:538): the paper's CNN on full MNIST,
# batch 1, lr 0.01 constant, five conditions. The conditions advance round-robin, one epoch at a time
# (each run checkpoints after every epoch and is resumed with a larger --epochs), so that whatever
# time a sitting has gives every condition the same number of epochs, and the next sitting continues.
#   bash docs/reproductions/gokmen-2017-cnn.sh            # up to 30 epochs (the paper's length)
#   EPOCHS=3 bash docs/reproductions/gokmen-2017-cnn.sh   # stop after 3
#   NAMES="fp nm-bm" bash docs/reproductions/gokmen-2017-cnn.sh   # only these conditions (run two
#                                                    # such lists side by side on two cores)
#   NAMES=nm-bm-um-13d MODE=sequential bash docs/reproductions/gokmen-2017-cnn.sh   # 13 devices on K1, 4 on K2
#   SEED=1 NAMES="nm-bm-um-4d" MODE=sequential bash docs/reproductions/gokmen-2017-cnn.sh   # another seed:
#                                                    # runs OUT/NAME-seed1 (seed 0 keeps the plain names)
# Update mode `summed`: every pulse train of the image's patches drawn, exact coincidence counts
# applied at once per image (docs/update-modes.md); ~5.5 min per analog epoch on one core.
# MODE=sequential (gokmen-2017-cnn-sequential.sh) runs the faithful per-patch update instead, on the
# compiled engine, into runs/gokmen-2017-cnn-sequential.
set -euo pipefail
MODE=${MODE:-summed}
if [[ $MODE == summed ]]; then
  # The committed summed results were made with the PyTorch pulse-update backend: reruns equal them
  # draw for draw with it (INSITU_BACKEND=auto runs the compiled CPU kernels where they apply).
  export INSITU_BACKEND=${INSITU_BACKEND:-torch}
  OUT=${OUT:-runs/gokmen-2017-cnn}
  PLOT=docs/reproductions/gokmen-2017-cnn.png
else
  export INSITU_BACKEND=${INSITU_BACKEND:-compiled}
  OUT=${OUT:-runs/gokmen-2017-cnn-$MODE}
  PLOT=docs/reproductions/gokmen-2017-cnn-$MODE.png
fi
DATA=${DATA:-../shared/datasets}
EPOCHS=${EPOCHS:-30}
SEED=${SEED:-0}
suffix=""; [[ $SEED != 0 ]] && suffix="-seed$SEED"
common=(--model cnn-2017 --activation tanh --dataset mnist --data-dir "$DATA" --batch-size 1 --lr 0.01
        --lr-milestones none --update-mode "$MODE" --threads 1 --no-progress --seed "$SEED")
read -r -a names <<< "${NAMES:-fp baseline nm-bm nm-bm-um nm-bm-um-4d}"
declare -A options=(
  [fp]="--preset floating-point"
  [baseline]="--preset gokmen-2017-cnn-baseline"
  [nm-bm]="--preset gokmen-2017-cnn-nm-bm"
  [nm-bm-um]="--preset gokmen-2017-cnn-nm-bm-um"
  [nm-bm-um-4d]="--preset gokmen-2017-cnn-nm-bm-um --conv-preset gokmen-2017-cnn-nm-bm-um-4d"
  # The paper's strongest variation reduction: 13 devices per weight on K1, 4 on K2 (not in the default NAMES).
  [nm-bm-um-13d]="--preset gokmen-2017-cnn-nm-bm-um --conv-preset gokmen-2017-cnn-nm-bm-um-13d,gokmen-2017-cnn-nm-bm-um-4d"
)
declare -A labels=(
  [fp]="floating point" [baseline]="RPU baseline" [nm-bm]="+ noise/bound mgmt" [nm-bm-um]="+ update mgmt"
  [nm-bm-um-4d]="+ 4 devices/weight on convs" [nm-bm-um-13d]="+ 13 devices on K1, 4 on K2"
)
for epoch in $(seq 1 "$EPOCHS"); do
  for name in "${names[@]}"; do
    run="$OUT/$name$suffix"
    done_epochs=$(python -c "import json,sys; print(len(json.load(open(sys.argv[1]))['epochs']))" "$run/results.json" 2>/dev/null || echo 0)
    (( done_epochs >= epoch )) && continue
    resume=(); [[ -f "$run/checkpoint.pt" ]] && resume=(--resume)
    # shellcheck disable=SC2086
    insitu train ${options[$name]} "${common[@]}" --epochs "$epoch" --out "$run" "${resume[@]}"
  done
  # Every condition that has a run folder, in the paper's order.
  runs=(); for name in fp baseline nm-bm nm-bm-um nm-bm-um-4d nm-bm-um-13d; do
    [[ -f "$OUT/$name$suffix/results.json" ]] && runs+=("$OUT/$name$suffix" --label "${labels[$name]}")
  done
  plot=$PLOT; [[ -n $suffix ]] && plot=${PLOT%.png}$suffix.png
  insitu compare "${runs[@]}" --title "CNN of Gokmen et al. 2017 on MNIST, batch 1${suffix:+ (seed $SEED)}" --out "$plot" || true
done
