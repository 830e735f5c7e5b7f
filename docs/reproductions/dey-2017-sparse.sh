#!/usr/bin/env bash
# Reproduces docs/reproductions/dey-2017-sparse.md (Dey, Shao, Chugg & Beerel 2017) on MNIST:
# headline dense/sparse networks (3 seeds, 50 epochs), accuracy against density for the three
# pattern kinds (20 epochs), fixed-point bit widths (batch 1, 1 epoch), the hardware model with
# measured PyTorch steps, and the figure. One CPU thread throughout; about an hour on a loaded
# two-core machine. JSON lands in docs/reproductions/data/dey-2017-sparse/.
set -euo pipefail
cd "$(dirname "$0")/../.."
python docs/reproductions/dey_2017_sparse.py --part headline
python docs/reproductions/dey_2017_sparse.py --part density
python docs/reproductions/dey_2017_sparse.py --part density-dense-output
# Bit widths: one process per condition (2 at a time), then bits.json and bits_sigmoid.json.
# The diagnosis of the failures at 8-12 bits (section 3) on a 10,000-image subset:
python docs/reproductions/dey_2017_fixed_point_diagnosis.py --subset 10000 \
  --out docs/reproductions/data/dey-2017-sparse/fixed_point_diagnosis.json
python docs/reproductions/dey_2017_fixed_point_diagnosis.py --subset 10000 --output sigmoid \
  --only "10:3 nearest" "10:3 stochastic" "10 split stochastic" "8 split stochastic" "8 split stochastic, η=2^-7" \
  --out docs/reproductions/data/dey-2017-sparse/fixed_point_diagnosis_sigmoid.json
docs/reproductions/dey-2017-sparse-bits.sh 2
python docs/reproductions/dey_2017_sparse.py --part hardware
python docs/reproductions/dey_2017_sparse.py --part plot
python benchmarks/bench_sparse.py > docs/reproductions/data/dey-2017-sparse/bench_sparse.json
# The hardware table of the headline network, as printed by the command line:
insitu sparse hardware --sizes 800,100,10 --out-degree 50,10 --z 200,5 --measure \
  > docs/reproductions/data/dey-2017-sparse/hardware_table.md
python docs/reproductions/dey_2017_sparse.py --part tables > docs/reproductions/data/dey-2017-sparse/tables.md
