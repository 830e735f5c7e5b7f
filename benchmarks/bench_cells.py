"""Cost of the learning-rule cells (issue 17) on the 2016 network at batch 1, one CPU thread.

Prints one JSON object: per rule, milliseconds per training step (forward, backward, update) of
the 784-256-128-10 sigmoid network on MNIST, and the ratio to plain pulsed SGD on the same device
in the same run (target: TTv2 at most 2x). The device is the 2016 preset's with the rule's cell
on it (``gokmen-vlasov-2016`` + ``cell``); the rules run with their defaults (a transfer of one
column per sample for TTv2, c-TTv2 and AGAD; one per batch, i.e. per sample here, for TTv1 and
mixed precision). Times are CPU time of this process.

With ``--replicas R`` it also times each rule with ``R`` replicas of the network in lockstep
(:mod:`insitu.replicas`; every replica the rule's cell, its own seed) and reports milliseconds per
replica-step, i.e. the lockstep step divided by ``R``, against the single network's step: what a
sweep of ``R`` points gains by training them together.

Usage: ``python benchmarks/bench_cells.py [--samples 1500] [--replicas 8] [--data-dir ../shared/datasets]``
"""

from __future__ import annotations

import argparse
import json
import platform

import torch

from insitu import AnalogSGD
from insitu.cells import cell_by_name
from insitu.data import load_dataset
from insitu.models import mlp
from insitu.presets import get_preset
from insitu.update.kernels import select_backend, set_threads

from bench_engine import _ms_per_step as step_ms  # the same timed step as the engine benchmark

RULES = ("sgd", "tiki-taka", "ttv2", "c-ttv2", "agad", "mp")


def ms_per_step(rule: str, x, y, steps: int, warmup: int, replicas: int | None = None) -> float:
    """Milliseconds per training step of one network, or per replica-step of ``replicas`` in lockstep."""
    torch.manual_seed(0)
    config = get_preset("gokmen-vlasov-2016").replace(cell=cell_by_name(rule))
    if replicas is None:
        model = mlp((784, 256, 128, 10), "sigmoid", config)
    else:
        seeds = [[3 * r + k for r in range(replicas)] for k in range(3)]
        model = mlp((784, 256, 128, 10), "sigmoid", [config] * replicas, seeds=seeds)
    ms = step_ms(model, AnalogSGD(model.parameters(), lr=0.01), x, y, 1, steps, warmup, replicas)
    return ms if replicas is None else ms / replicas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1500)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--replicas", type=int, default=None, help="also time R replicas in lockstep per rule")
    parser.add_argument("--replica-steps", type=int, default=100, help="lockstep steps timed (after 20 warm-up steps)")
    parser.add_argument("--rules", default=",".join(RULES), help="comma-separated rules to time (sgd is always timed)")
    parser.add_argument("--data-dir", default="../shared/datasets")
    args = parser.parse_args()
    rules = ["sgd"] + [r for r in args.rules.split(",") if r and r != "sgd"]
    torch.set_num_threads(1)
    set_threads(1)
    data = load_dataset("mnist", args.data_dir)
    n = args.samples + args.warmup
    x, y = data.train_x[:n], data.train_y[:n]
    results = {rule: ms_per_step(rule, x, y, args.samples, args.warmup) for rule in rules}
    base = results["sgd"]
    out = {
        "benchmark": "learning-rule cells, 2016 MLP, batch 1",
        "backend": select_backend(torch.device("cpu")),
        "samples": args.samples,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "ms_per_step": results,
        "over_sgd": {rule: ms / base for rule, ms in results.items()},
    }
    if "ttv2" in results:
        out["target"] = {"ttv2_over_sgd_at_most": 2.0, "met": results["ttv2"] / base <= 2.0}
    if args.replicas:
        lockstep = {rule: ms_per_step(rule, x, y, args.replica_steps, 20, args.replicas) for rule in rules}
        out["lockstep"] = {
            "replicas": args.replicas,
            "steps": args.replica_steps,
            "ms_per_replica_step": lockstep,
            "speedup_over_single": {rule: results[rule] / ms for rule, ms in lockstep.items()},
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
