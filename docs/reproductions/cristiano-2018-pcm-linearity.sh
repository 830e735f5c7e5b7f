#!/usr/bin/env bash
# Reproduces the section "Linearity with repeated seeds (issue 6)" of docs/reproductions/cristiano-2018-pcm.md:
# 784-250-125-10 sigmoid network, 10,000-image MNIST subset, 2 epochs at batch 1 (lr 0.1, halved
# after epoch 1), one process on one thread: 47 PCM runs of 57-113 s (2.5-6.4 ms/sample on a shared
# machine) and 12 software runs of 5-10 s. Runs go one after another, seed by seed, so that an
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
# Follow-ups chosen after the runs above: is the strongly saturating LSP at T = 10,000 rescued by
# transferring its pairs at half of G_max instead of 90 %? Where between nonlinearity 2 and 4 does
# it break? And two more seeds for the T = 1,000 comparison.
for seed in 0 1 2; do
  python "$script" run lsp4-msp2-T10000-R0.5-s$seed lsp3-msp2-T10000-s$seed --data-dir "$data"
done
python "$script" run lsp0.2-msp2-T1000-s3 lsp4-msp2-T1000-s3 lsp0.2-msp2-T1000-s4 lsp4-msp2-T1000-s4 --data-dir "$data"
# Two more seeds for the main comparison at T = 10,000.
python "$script" run lsp4-msp2-T10000-s3 lsp0.2-msp2-T10000-s3 lsp4-msp2-T10000-s4 lsp0.2-msp2-T10000-s4 --data-dir "$data"
# Control: the near-linear LSP at T = 10,000 with the same lower transfer threshold.
python "$script" run lsp0.2-msp2-T10000-R0.5-s0 lsp0.2-msp2-T10000-R0.5-s1 lsp0.2-msp2-T10000-R0.5-s2 --data-dir "$data"
python "$script" summarize
