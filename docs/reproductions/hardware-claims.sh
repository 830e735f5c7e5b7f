#!/usr/bin/env bash
# Regenerates docs/reproductions/hardware-claims.md's numbers: the JSON files under
# docs/reproductions/data/hardware-claims/ and docs/reproductions/hardware-claims.png (seconds; the
# only timing is a PyTorch batch-1 step of the 784-250-125-10 MLP on this machine's CPU).
set -euo pipefail
python docs/reproductions/hardware_claims.py docs/reproductions/data/hardware-claims
# Section 4 (edge processing, Dey et al. 2017); runs on its own too:
python docs/reproductions/hardware_claims_edge.py docs/reproductions/data/hardware-claims
# The CLI tables quoted in the doc:
insitu hardware estimate --model fc-1b --compare --pipeline --baseline cpu \
  --json docs/reproductions/data/hardware-claims/cli-fc-1b-compare.json
insitu hardware estimate --model cnn-2017 --hardware rpu \
  --json docs/reproductions/data/hardware-claims/cli-cnn-2017-rpu.json --plot docs/reproductions/hardware-cnn-2017-rpu.png
insitu hardware estimate --model mlp --inputs 800 --hidden 100 --compare rpu,pcm,gpu,edge --baseline gpu \
  --set "edge.out_degrees=[4,1]" --json docs/reproductions/data/hardware-claims/cli-edge-compare.json
