#!/usr/bin/env bash
# The 2017 CNN at full length with the faithful `sequential` update (one rank-1 pulse update per
# image patch, in order) on the compiled CPU engine (docs/engine.md): about 2-3.5 ms per image on
# one core. Same conditions, options and round-robin as gokmen-2017-cnn.sh (NAMES, EPOCHS, OUT).
# Committed partial runs: docs/reproductions/data/gokmen-2017-cnn-sequential/NAME (copy a folder to
# runs/gokmen-2017-cnn-sequential/NAME to continue it).
MODE=sequential exec bash "$(dirname "$0")/gokmen-2017-cnn.sh" "$@"
