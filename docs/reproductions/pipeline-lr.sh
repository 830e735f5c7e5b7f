#!/usr/bin/env bash
# Issue 18, item 6: at which learning rate does the layer pipeline's weight staleness start to cost?
# (docs/pipeline.md, "The learning rate at which staleness costs".) The 784-256-128-10 sigmoid
# network of Gokmen & Vlasov 2016, floating point, batch 1, all 60,000 MNIST images, 3 epochs at a
# constant learning rate, with and without --pipeline (forward delays 5 / 3 / 1 examples), seeds 0
# and 1, learning rates 0.01 (the paper's), 0.03, 0.1 and 0.3. Floating point, so that the
# learning rate changes only the optimiser's step (on the RPU it also changes the pulse
# probabilities Cx, Cd, Gokmen & Vlasov 2016 Eq. 3, and so the device's behaviour).
#   bash docs/reproductions/pipeline-lr.sh          # 3-7 min a run (1.6-2.3 ms a sample beside other jobs); finished runs are skipped
set -euo pipefail
DATA=${DATA:-../shared/datasets}
OUT=${OUT:-runs/pipeline-lr}
LRS=${LRS:-0.01 0.03 0.1 0.3}
SEEDS=${SEEDS:-0 1}
for seed in $SEEDS; do
  for lr in $LRS; do
    for pipelined in no yes; do
      run="$OUT/fp-lr$lr-pipeline-$pipelined-s$seed"
      [[ -f "$run/results.json" ]] && python -c "import json,sys; sys.exit(json.load(open(sys.argv[1]))['status']!='completed')" "$run/results.json" && continue
      flag=(); [[ $pipelined == yes ]] && flag=(--pipeline)
      resume=(); [[ -f "$run/checkpoint.pt" ]] && resume=(--resume)
      insitu train --preset floating-point --dataset mnist --data-dir "$DATA" --model mlp --hidden 256,128 \
        --activation sigmoid --batch-size 1 --epochs 3 --lr "$lr" --lr-milestones none --seed "$seed" \
        --threads 1 --no-progress "${flag[@]}" --out "$run" "${resume[@]}"
    done
  done
done
python - "$OUT" <<'PY'
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = {}
for run in sorted(out.glob("fp-lr*-pipeline-*-s*")):
    path = run / "results.json"
    if not path.exists():
        continue
    r = json.loads(path.read_text())
    if r["status"] != "completed":
        continue
    head, _, seed = run.name.rpartition("-s")
    lr_part, _, pipelined = head.partition("-pipeline-")
    rows.setdefault((float(lr_part.removeprefix("fp-lr")), pipelined), {})[int(seed)] = r["epochs"]
summary = []
print("| lr | pipeline | seed | test error per epoch (%) | train loss, epoch 3 |")
print("| ---: | --- | ---: | --- | ---: |")
for (lr, pipelined), seeds in sorted(rows.items()):
    for seed, epochs in sorted(seeds.items()):
        errs = " / ".join(f"{100 * e['test_error']:.2f}" for e in epochs)
        print(f"| {lr:g} | {pipelined} | {seed} | {errs} | {epochs[-1]['train_loss']:.4f} |")
        summary.append({"lr": lr, "pipeline": pipelined == "yes", "seed": seed,
                        "test_error": [e["test_error"] for e in epochs], "train_loss": [e["train_loss"] for e in epochs]})
print()
print("| lr | final test error, no pipeline (mean of seeds) | pipelined | pipelined − not (points) |")
print("| ---: | ---: | ---: | ---: |")
for lr in sorted({lr for lr, _ in rows}):
    no, yes = rows.get((lr, "no"), {}), rows.get((lr, "yes"), {})
    common = sorted(set(no) & set(yes))
    if not common:
        continue
    a = statistics.fmean(100 * no[s][-1]["test_error"] for s in common)
    b = statistics.fmean(100 * yes[s][-1]["test_error"] for s in common)
    print(f"| {lr:g} | {a:.2f} | {b:.2f} | {b - a:+.2f} (seeds {common}) |")
(out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
PY
