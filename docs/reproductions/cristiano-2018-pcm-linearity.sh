#!/usr/bin/env bash
# Reproduces the section "Linearity with repeated seeds" of docs/reproductions/cristiano-2018-pcm.md:
# 784-250-125-10 sigmoid network, 10,000-image MNIST subset, 2 epochs at batch 1 (lr 0.1, halved
# after epoch 1), one process on one thread. Runs go one after another, seed by seed, so that an
# interrupted queue leaves balanced conditions; finished runs are skipped when run again.
set -euo pipefail
cd "$(dirname "$0")/../.."
script=docs/reproductions/cristiano_2018_pcm_linearity.py
data=${DATA_DIR:-../shared/datasets}
# Software baseline: the learning-rate check (constant lr) and the schedule used by every PCM run.
python "$script" run fpc-lr0.01-s0 fpc-lr0.02-s0 fpc-lr0.05-s0 fpc-lr0.1-s0 fpc-lr0.2-s0 fpc-lr0.5-s0 \
    fpc-lr0.02-s1 fpc-lr0.05-s1 fpc-lr0.1-s1 fp-lr0.1-s0 fp-lr0.1-s1 fp-lr0.1-s2 --data-dir "$data"
for seed in 0 1 2; do
  python "$script" run \
    lsp0.2-msp2-T1000-s$seed lsp4-msp2-T1000-s$seed lsp0.2-msp2-T10000-s$seed lsp4-msp2-T10000-s$seed \
    lsp0.2-msp0.2-T1000-s$seed lsp0.2-msp4-T1000-s$seed \
    lsp2-msp2-T1000-s$seed lsp2-msp2-T10000-s$seed lsp1-msp2-T1000-s$seed lsp1-msp2-T10000-s$seed \
    --data-dir "$data"
done
python "$script" summarize
