"""Write docs/reproductions/data/device-fit-example.csv: a synthetic pulse response to fit.

One soft-bounds device (the mean device: no device-to-device spread) with dw_min 0.004,
up_down 0.05, w_max 1.1, w_min -0.9 and 20 % cycle-to-cycle spread (dw_min_std 0.2), driven
through insitu's own model from its lower bound by 2 cycles of 400 up then 400 down pulses
(seed 0). The weight is written as a conductance, G = 20 µS + 8 µS · w (w = -1 is 12 µS, w = 1 is
28 µS), with the direction of each pulse. Fit it back with

    insitu device fit docs/reproductions/data/device-fit-example.csv --g-range 12,28 --out /tmp/tile.yaml

Run: PYTHONPATH=src python docs/reproductions/device_fit_example.py
"""

from pathlib import Path

import torch

from insitu.devices import SoftBoundsDevice
from insitu.devices.response import mean_device, simulate_response

DEVICE = SoftBoundsDevice(dw_min=0.004, up_down=0.05, w_max=1.1, w_min=-0.9, dw_min_std=0.2)


def main() -> None:
    sim = simulate_response(mean_device(DEVICE), pulses=400, cycles=2, seed=0, dtype=torch.float64)
    out = Path(__file__).parent / "data" / "device-fit-example.csv"
    lines = ["pulse,conductance_uS,direction"]
    for n, w, d in zip(sim["pulse"].tolist(), sim["weight"][:, 0].tolist(), sim["direction"].tolist()):
        lines.append(f"{n},{20 + 8 * w:.6f},{d:+d}" if n else f"{n},{20 + 8 * w:.6f},")
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out} ({len(lines) - 1} rows)")


if __name__ == "__main__":
    main()
