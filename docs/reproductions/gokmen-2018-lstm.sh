#!/usr/bin/env bash
# Reproduction (reduced) of Gokmen, Rasch & Haensch 2018, "Training LSTM networks with resistive cross-point
# devices" (Front. Neurosci. 12:745): docs/reproductions/gokmen-2018-lstm.md. Next-character prediction on the
# bundled text with a one-layer analog LSTM of 64 units, batch 1, lr 0.5, 3,000 windows of 100 characters per
# epoch, 2 epochs; the study file varies one device or periphery parameter at a time around the 2016 device with
# the 2017 managements. Both parts resume from their checkpoints when rerun.
#   bash docs/reproductions/gokmen-2018-lstm.sh            # about 40 to 60 ms a window per core
set -euo pipefail
OUT=${OUT:-sweeps}
insitu sweep run docs/reproductions/configs/gokmen-2018-lstm.yaml --out "$OUT/gokmen-2018-lstm" --workers "${WORKERS:-2}" --threads 1
fp=(--preset floating-point --task char-lm --model lstm --hidden 64 --seq-len 100 --epochs 2 --batch-size 1 --lr 0.5
    --lr-milestones none --subset 3000 --seed 0 --threads 1 --no-progress --out "$OUT/gokmen-2018-lstm-fp")
[[ -f "$OUT/gokmen-2018-lstm-fp/checkpoint.pt" ]] && fp+=(--resume)
insitu train "${fp[@]}"
# Tiki-Taka v1 and chopped TTv2 on the most asymmetric device of the study (its defaults and the MLP study's settings).
insitu sweep run docs/reproductions/configs/gokmen-2018-lstm-tiki-taka.yaml --out "$OUT/gokmen-2018-lstm-tiki-taka" --workers "${WORKERS:-2}" --threads 1
# A second seed of the base and the 4 % asymmetry point.
insitu sweep run docs/reproductions/configs/gokmen-2018-lstm-seed1.yaml --out "$OUT/gokmen-2018-lstm-seed1" --workers "${WORKERS:-2}" --threads 1
python docs/reproductions/gokmen_2018_lstm.py --collect "$OUT"
