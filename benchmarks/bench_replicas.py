"""Cost of replicas in lockstep (issue 7): R copies of the Gokmen & Vlasov 2016 network at batch 1.

Prints one JSON object with, for R = 1, 8 and 32 (``--replicas``), the time of one training step
of all R replicas together (784-256-128-10 sigmoid, preset ``gokmen-vlasov-2016``, batch 1,
stochastic sequential pulse update, real MNIST samples, one CPU thread), and the same for one
plain (non-replicated) network, which is what R separate runs would each pay. Each replica gets
its own seed and its own sample per step, as in a study.

``cost_vs_single`` is ``ms per step of R replicas / ms per step of one plain network``; the target
of issue 7 is at most 4 for R = 32. ``speedup_vs_separate`` is ``R × single / lockstep``.

Times are CPU time of this process (``time.process_time``), so that other jobs on a shared
machine distort them less; ``--wall`` uses wall-clock time instead.

Usage: ``python benchmarks/bench_replicas.py [--steps 1000] [--replicas 1,8,32] [--data-dir ../shared/datasets]``
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
from insitu.update.kernels import set_threads

SIZES = (784, 256, 128, 10)


def _time_steps(model, x, y, replicas, steps, warmup, clock) -> float:
    """Milliseconds per training step; ``replicas=None`` for a plain network."""
    optimizer = AnalogSGD(model.parameters(), lr=0.01)
    n = x.shape[0]
    generator = torch.Generator().manual_seed(0)

    def step():
        if replicas is None:
            index = torch.randint(n, (1,), generator=generator)
            logits, target = model(x[index]), y[index]
        else:
            index = torch.randint(n, (replicas, 1), generator=generator)
            logits, target = model(x[index]).flatten(0, 1), y[index].flatten()
        optimizer.zero_grad()
        nn.functional.cross_entropy(logits, target, reduction="sum").backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    start = clock()
    for _ in range(steps):
        step()
    return 1e3 * (clock() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--replicas", default="1,8,32")
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    parser.add_argument("--wall", action="store_true", help="wall-clock instead of process CPU time")
    args = parser.parse_args()
    torch.set_num_threads(1)
    set_threads(1)  # the compiled lockstep kernels run in numba's threads, counted apart from torch's
    clock = time.perf_counter if args.wall else time.process_time
    data = load_dataset("mnist", path=args.data_dir)
    x, y = data.train_x, data.train_y
    config = get_preset("gokmen-vlasov-2016")
    result = {
        "network": "784-256-128-10 sigmoid, batch 1",
        "preset": "gokmen-vlasov-2016",
        "threads": 1,
        "clock": "wall" if args.wall else "process CPU time",
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "steps": args.steps,
    }
    torch.manual_seed(0)
    single = _time_steps(mlp(SIZES, "sigmoid", config), x, y, None, args.steps, args.warmup, clock)
    result["single_ms_per_step"] = single
    for n_rep in [int(r) for r in args.replicas.split(",")]:
        seeds = [[1000 * layer + r for r in range(n_rep)] for layer in range(len(SIZES) - 1)]
        model = mlp(SIZES, "sigmoid", [config] * n_rep, seeds=seeds)
        ms = _time_steps(model, x, y, n_rep, args.steps, args.warmup, clock)
        result[f"R{n_rep}"] = {
            "ms_per_step": ms,
            "ms_per_replica_step": ms / n_rep,
            "cost_vs_single": ms / single,
            "speedup_vs_separate": n_rep * single / ms,
        }
    result["target_R32_cost_vs_single"] = 4.0
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
