#!/usr/bin/env bash
# Reproduces docs/reproductions/cristiano-2018-pcm.md: 21 conditions of the 784-250-125-10 sigmoid
# network on a 10,000-image MNIST subset, 2 epochs at batch 1 (lr 0.1 then 0.05), one change to
# the cristiano-2018-two-pair preset per condition (see cristiano_2018_pcm.py for the list).
# Each run takes 1-4 minutes on one core; the two workers below run in parallel. Interrupted
# runs continue from their checkpoints when the same command is run again.
set -euo pipefail
cd "$(dirname "$0")/../.."
script=docs/reproductions/cristiano_2018_pcm.py
python "$script" run --worker 0/2 &
python "$script" run --worker 1/2 &
wait
python "$script" summarize   # data/cristiano-2018-pcm/*.json, summary.json, cristiano-2018-pcm.png, Markdown table
