"""Speed and memory of training the Gokmen & Vlasov 2016 network (784-256-128-10, sigmoid).

Prints one JSON object:

* ``batch1_ms_per_sample``: analog training (preset ``gokmen-vlasov-2016``, stochastic pulses,
  sequential update, the three layers' updates fused by ``AnalogSGD``) at batch 1, on real MNIST
  samples, one CPU thread; ``batch1_per_tile_ms_per_sample`` the same with each tile updated on
  its own (``AnalogSGD(fused=False)``); the same for a plain PyTorch float network
  (``torch_batch1_ms_per_sample``);
* ``batch64_ms_per_step``: one training step at batch 64 for the analog network in the
  ``sequential`` (64 rank-1 pulse updates), ``summed`` and ``batched`` update modes, and a plain
  PyTorch float step (``torch_batch64_ms_per_step``), with their ratios;
* ``peak_rss_mb``: peak resident memory of the process.

Times are CPU time of the process (``time.process_time``) by default, which a shared machine
disturbs less than wall time; with one thread the two agree on an idle machine
(``--clock wall`` for wall time).

Usage: ``python benchmarks/bench_rpu_mlp.py [--samples 3000] [--data-dir ../shared/datasets]``.
Targets (issue 2): batch 1 at most 0.5 ms per sample; batch 64 (batched mode) at most twice the
float step. aihwkit 1.2.0 takes about 2.4 ms per sample at batch 1 on this machine class.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import torch
from torch import nn

from insitu import AnalogSGD
from insitu.data import load_dataset
from insitu.models import mlp
from insitu.presets import get_preset

SIZES = (784, 256, 128, 10)


CLOCKS = {"process": time.process_time, "wall": time.perf_counter}


def _time_training(model, optimizer, x, y, batch, steps, warmup, clock=time.process_time):
    loss_fn = nn.CrossEntropyLoss()

    def step(i):
        xb, yb = x[i * batch : (i + 1) * batch], y[i * batch : (i + 1) * batch]
        optimizer.zero_grad()
        loss_fn(model(xb), yb).backward()
        optimizer.step()

    for i in range(warmup):
        step(i)
    start = clock()
    for i in range(warmup, warmup + steps):
        step(i)
    return (clock() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=3000, help="timed samples at batch 1")
    parser.add_argument("--steps64", type=int, default=40, help="timed steps at batch 64")
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="process", help="CPU time (default) or wall time")
    args = parser.parse_args()
    clock = CLOCKS[args.clock]
    torch.set_num_threads(args.threads)
    data = load_dataset("mnist", path=args.data_dir)
    x, y = data.train_x, data.train_y
    warmup = 500
    result = {
        "network": "784-256-128-10 sigmoid",
        "preset": "gokmen-vlasov-2016",
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "clock": args.clock,
    }

    torch.manual_seed(0)
    analog = mlp(SIZES, "sigmoid", get_preset("gokmen-vlasov-2016"))
    result["batch1_ms_per_sample"] = 1e3 * _time_training(analog, AnalogSGD(analog.parameters(), lr=0.01), x, y, 1, args.samples, warmup, clock)
    torch.manual_seed(0)
    analog = mlp(SIZES, "sigmoid", get_preset("gokmen-vlasov-2016"))
    result["batch1_per_tile_ms_per_sample"] = 1e3 * _time_training(
        analog, AnalogSGD(analog.parameters(), lr=0.01, fused=False), x, y, 1, args.samples, warmup, clock
    )
    torch.manual_seed(0)
    digital = mlp(SIZES, "sigmoid", None)
    result["torch_batch1_ms_per_sample"] = 1e3 * _time_training(
        digital, torch.optim.SGD(digital.parameters(), lr=0.01), x, y, 1, args.samples, warmup, clock
    )

    for mode in ("sequential", "summed", "batched"):
        config = get_preset("gokmen-vlasov-2016")
        config = config.replace(update=config.update.replace(mode=mode))
        torch.manual_seed(0)
        model = mlp(SIZES, "sigmoid", config)
        result[f"batch64_{mode}_ms_per_step"] = 1e3 * _time_training(
            model, AnalogSGD(model.parameters(), lr=0.01), x, y, 64, args.steps64, 5, clock
        )
    torch.manual_seed(0)
    digital = mlp(SIZES, "sigmoid", None)
    result["torch_batch64_ms_per_step"] = 1e3 * _time_training(
        digital, torch.optim.SGD(digital.parameters(), lr=0.01), x, y, 64, args.steps64 * 4, 20, clock
    )
    for mode in ("sequential", "summed", "batched"):
        result[f"batch64_{mode}_over_torch"] = result[f"batch64_{mode}_ms_per_step"] / result["torch_batch64_ms_per_step"]
    result["batch1_over_torch"] = result["batch1_ms_per_sample"] / result["torch_batch1_ms_per_sample"]
    result["batch1_per_tile_over_fused"] = result["batch1_per_tile_ms_per_sample"] / result["batch1_ms_per_sample"]
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
