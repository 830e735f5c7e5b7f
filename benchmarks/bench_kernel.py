"""The compiled sequential kernel alone on one layer: cost per coincidence (issue 15).

The first layer of the 2016 network (785 × 256 with the bias column, the 2016 device), one batch
of 64 MNIST images as ``x`` and Gaussian errors ``δ`` (std 0.03) as ``d``, lr 0.01, BL 10: 64
rank-1 pulse updates in one kernel call, timed with and without cycle-to-cycle noise. Prints one
JSON object: ms per batch, coincidences per batch, ns per coincidence.

``python benchmarks/bench_kernel.py [--reps 20] [--data-dir ../shared/datasets]``
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from insitu.data import load_dataset
from insitu.presets import get_preset
from insitu.tile import AnalogTile
from insitu.update.kernels import compiled_available
from insitu.update.kernels.rng_state import new_state
from insitu.update.pulse import _compiled_plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--data-dir", default="../shared/datasets")
    args = parser.parse_args()
    if not compiled_available():
        raise SystemExit("numba is not installed: the compiled kernel is not available (pip install numba).")
    torch.set_num_threads(1)
    config = get_preset("gokmen-vlasov-2016")
    tile = AnalogTile(256, 785, config, seed=1)
    data = load_dataset("mnist", path=args.data_dir)
    x = torch.cat([data.train_x[:64].reshape(64, -1), torch.ones(64, 1)], 1).contiguous()
    d = (torch.randn(64, 256, generator=torch.Generator().manual_seed(0)) * 0.03).contiguous()
    plan = _compiled_plan(None, tile.weight, tile.device_params, tile.device_model, new_state(0))
    _, _, kernel, cell, packed, words, spare, tally = plan
    x_np, d_np = x.numpy(), d.numpy()
    result = {"layer": [256, 785], "batch": 64, "bl": 10, "lr": 0.01, "clock": "wall (perf_counter)"}
    for c2c in (config.device.dw_min_std, 0.0):
        kernel(cell, packed, x_np, d_np, 0.01, config.device.nominal_step, 10, False, False, c2c, words, spare, tally)
        tally[:] = 0
        start = time.perf_counter()
        for _ in range(args.reps):
            kernel(cell, packed, x_np, d_np, 0.01, config.device.nominal_step, 10, False, False, c2c, words, spare, tally)
        ms = 1e3 * (time.perf_counter() - start) / args.reps
        coincidences = tally[1] / args.reps
        result[f"c2c_{c2c}"] = {"ms_per_batch": ms, "coincidences_per_batch": coincidences, "ns_per_coincidence": 1e6 * ms / coincidences}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
