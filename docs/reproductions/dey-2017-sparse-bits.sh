#!/usr/bin/env bash
# The fixed-point bit-width tables of docs/reproductions/dey-2017-sparse.md (section 3): every
# condition of BITS_RUNS in dey_2017_sparse.py (one epoch of MNIST at batch 1, one thread each) as
# its own process, JOBS at a time, then bits.json / bits_sigmoid.json, the figure and the tables.
# Usage: docs/reproductions/dey-2017-sparse-bits.sh [JOBS] [DATA_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
JOBS="${1:-2}"
DATA_DIR="${2:-../shared/datasets}"
script=docs/reproductions/dey_2017_sparse.py
python "$script" --list-conditions | while IFS=$'\t' read -r output condition; do
  printf '%s\0%s\0' "$output" "$condition"
done | xargs -0 -n 2 -P "$JOBS" sh -c 'OMP_NUM_THREADS=1 python "$0" --part bits-one --data-dir "$1" --output "$2" --condition "$3"' "$script" "$DATA_DIR"
python "$script" --part bits-collect
python "$script" --part plot
python "$script" --part tables > docs/reproductions/data/dey-2017-sparse/tables.md
