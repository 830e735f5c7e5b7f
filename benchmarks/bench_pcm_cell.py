"""Cost of the two-pair PCM cell (Cristiano, Burr et al. 2018) at full size, batch 1, one CPU thread.

Prints one JSON object: milliseconds per training step (forward, backward, the LSP's open-loop
writes and, every ``transfer_every`` examples, the closed-loop transfers) of the 784-250-125-10
sigmoid network on MNIST with the ``cristiano-2018-two-pair`` preset's cell, its weights mapped
with a gain per array (``weight_scaling_omega`` 0.25, the full-size study's cell), per backend,
and the plain PyTorch float step of the same network in the same run. With ``--columns K`` the
cell transfers ``K`` columns at a time, interleaved with training, with verify read noise 0.01
(``transfer_mode="columns"``, the hardware's schedule). Steps are timed after a warm-up (the
compiled kernels compile there); the timed steps include the transfers that fall due in them.
Times are CPU time of this process.

Usage: ``python benchmarks/bench_pcm_cell.py [--samples 2000] [--warmup 100] [--columns 0]
[--transfer-every 1000] [--backends compiled,torch] [--data-dir ../shared/datasets]``
"""

from __future__ import annotations

import argparse
import json
import platform

import torch

from insitu import AnalogSGD
from insitu.data import load_dataset
from insitu.models import mlp
from insitu.presets import get_preset
from insitu.update.kernels import use_backend

from bench_engine import _ms_per_step  # the same timed step as the engine benchmark

SIZES = (784, 250, 125, 10)


def cell_config(columns: int, transfer_every: int):
    preset = get_preset("cristiano-2018-two-pair")
    changes = dict(weight_scaling_omega=0.25, transfer_every=transfer_every)
    if columns:
        changes.update(transfer_mode="columns", transfer_columns=columns, clt_read_noise=0.01)
    return preset.replace(cell=preset.cell.replace(**changes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=2000, help="timed steps (batch 1)")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--columns", type=int, default=0, help="columns per transfer step (0: the whole array at once)")
    parser.add_argument("--transfer-every", type=int, default=1000,
                        help="examples between transfers (the preset's 1,000; a large number leaves the open-loop writes and the saturation-triggered transfers)")
    parser.add_argument("--backends", default="compiled,torch")
    parser.add_argument("--data-dir", default="../shared/datasets")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("mnist", path=args.data_dir)
    x, y = data.train_x, data.train_y
    config = cell_config(args.columns, args.transfer_every)
    result = {
        "threads": 1, "clock": "process CPU time", "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
        "network": "784-250-125-10 sigmoid, batch 1, lr 0.1", "cell": "cristiano-2018-two-pair, weight_scaling_omega 0.25",
        "transfer": (f"{args.columns} columns per step, verify read noise 0.01, each column every {args.transfer_every} examples"
                     if args.columns else f"whole array every {args.transfer_every} examples"),
        "samples": args.samples, "warmup": args.warmup,
    }
    torch.manual_seed(0)
    float_model = mlp(SIZES, "sigmoid", None)
    result["float_ms"] = _ms_per_step(float_model, torch.optim.SGD(float_model.parameters(), lr=0.1), x, y, 1, args.samples, args.warmup)
    for backend in args.backends.split(","):
        with use_backend(backend):
            torch.manual_seed(0)
            model = mlp(SIZES, "sigmoid", config)
            ms = _ms_per_step(model, AnalogSGD(model.parameters(), lr=0.1), x, y, 1, args.samples, args.warmup)
        result[f"{backend}_ms"] = ms
        result[f"{backend}_over_float"] = ms / result["float_ms"]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
