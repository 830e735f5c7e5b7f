#!/usr/bin/env bash
# Issue 18, item 6: what the junction pipeline's weight staleness costs the pre-defined sparse MLP of
# Dey et al. 2017 (docs/pipeline.md). The hardware setting of the bit-width study (dey_2017_sparse.py):
# 800-100-10 clash-free, out-degrees 50/10, z 200/5, ReLU, softmax, batch 1 (delays 3 and 1 examples),
# 3 epochs on all 60,000 MNIST images; each condition with and without --pipeline:
#   float SGD at the study's rate 2^-6 and at 2^-3 (where staleness should start to cost);
#   12-bit fixed point (the study's "12 split, stochastic": weights 12:1, activations 12:4, errors 12:0).
set -euo pipefail
DATA=${DATA:-../shared/datasets}
OUT=${OUT:-runs/pipeline-sparse}
common=(--dataset mnist --data-dir "$DATA" --sizes 800,100,10 --out-degree 50,10 --pattern clash-free --z 200,5
        --activation relu --output softmax --batch-size 1 --epochs 3 --weight-decay 0 --threads 1)
declare -A options=(
  [float-lr2-6]="--optimizer sgd --lr 0.015625"
  [float-lr2-3]="--optimizer sgd --lr 0.125"
  [fixed-12]="--fixed-point 12:4 --weight-format 12:1 --error-format 12:0 --update-format 12:1 --update-rounding stochastic --lr-exponent 6"
)
for name in float-lr2-6 float-lr2-3 fixed-12; do
  for pipelined in no yes; do
    run="$OUT/$name-pipeline-$pipelined"
    [[ -f "$run/results.json" ]] && python -c "import json,sys; sys.exit(json.load(open(sys.argv[1]))['status']!='completed')" "$run/results.json" && continue
    flag=(); [[ $pipelined == yes ]] && flag=(--pipeline)
    resume=(); [[ -f "$run/checkpoint.pt" ]] && resume=(--resume)
    # shellcheck disable=SC2086
    insitu sparse train ${options[$name]} "${common[@]}" "${flag[@]}" --run-dir "$run" "${resume[@]}"
  done
done
python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| condition | pipeline | test accuracy per epoch (%) | train loss, last epoch |")
print("| --- | --- | --- | ---: |")
for run in sorted(out.glob("*-pipeline-*")):
    r = json.loads((run / "results.json").read_text())
    name, _, pipelined = run.name.rpartition("-pipeline-")
    acc = " / ".join(f"{100 * e['test_accuracy']:.2f}" for e in r["epochs"])
    print(f"| {name} | {pipelined} | {acc} | {r['epochs'][-1]['train_loss']:.4f} |")
PY
