#!/usr/bin/env bash
# The 2016 RPU runs of docs/reproductions/gokmen-vlasov-2016.md (seeds 0 and 1, 30 epochs) again
# on the compiled pulse-update engine (issue 15), to check that it trains as the torch path did:
# same results in distribution, not draw for draw (another random stream). About 20-35 minutes
# each on one core; run them in parallel on two. Interrupted runs continue with --resume.
# Since session 30 (column trains drawn as a whole first: another random stream) the results go
# to engine-rpu-s{0,1}-session30.json; engine-rpu-s{0,1}-session27.json are the runs of session 27
# (the kernels' normals from the train lanes), engine-rpu-s{0,1}.json the runs at code 7d02882.
set -euo pipefail
DATA=${DATA:-../shared/datasets}
OUT=${OUT:-runs}
common=(--preset gokmen-vlasov-2016 --dataset mnist --data-dir "$DATA" --epochs 30 --batch-size 1 --lr 0.01
        --lr-milestones 10,20 --threads 1 --no-progress --backend compiled)
insitu train "${common[@]}" --seed 0 --out "$OUT/engine-gv2016-rpu-s0" &
insitu train "${common[@]}" --seed 1 --out "$OUT/engine-gv2016-rpu-s1" &
wait
mkdir -p docs/reproductions/data/gokmen-vlasov-2016
cp "$OUT/engine-gv2016-rpu-s0/results.json" docs/reproductions/data/gokmen-vlasov-2016/engine-rpu-s0-session30.json
cp "$OUT/engine-gv2016-rpu-s1/results.json" docs/reproductions/data/gokmen-vlasov-2016/engine-rpu-s1-session30.json
