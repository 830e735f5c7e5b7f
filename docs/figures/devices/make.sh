#!/bin/sh
# Regenerate the device response figures of docs/devices.md (600x400 PNGs, dpi 80), from the repository root:
#   sh docs/figures/devices/make.sh
set -e
out=docs/figures/devices
export PYTHONPATH=src
for preset in gokmen-vlasov-2016 pow-step-2016-io reram-es-2016-io reram-sb-2016-io ecram-2016-io ecram-mo-2016-io capacitor-2016-io idealized-2016-io; do
    python -m insitu device plot "$preset" --out "$out/$preset.png"
done
# The families without a preset, from device config files (their parameters are stated in docs/devices.md).
tmp=$(mktemp -d)
python - "$tmp" <<'PY'
import sys
from insitu.devices import PiecewiseStepDevice, SoftBoundsDevice
SoftBoundsDevice(dw_min=0.002, up_down=0.05, w_max=1.0, w_min=-1.0, dw_min_dtod=0.1, w_max_dtod=0.1, w_min_dtod=0.1, dw_min_std=0.3).to_yaml(f"{sys.argv[1]}/soft-bounds.yaml")
PiecewiseStepDevice(dw_min=0.002, w_max=1.0, w_min=-1.0, dw_min_dtod=0.1, w_max_dtod=0.1, w_min_dtod=0.1, dw_min_std=0.3,
                    piecewise_up=(1.6, 1.4, 1.2, 1.0, 0.7, 0.3), piecewise_down=(0.4, 0.8, 1.0, 1.1, 1.3, 1.5)).to_yaml(f"{sys.argv[1]}/piecewise.yaml")
PY
python -m insitu device plot "$tmp/soft-bounds.yaml" --out "$out/soft-bounds.png" --title "SoftBoundsDevice: dw_min 0.002, up_down 0.05, bounds ±1"
python -m insitu device plot "$tmp/piecewise.yaml" --out "$out/piecewise.png" --title "PiecewiseStepDevice: dw_min 0.002, 6 nodes, bounds ±1"
rm -r "$tmp"
