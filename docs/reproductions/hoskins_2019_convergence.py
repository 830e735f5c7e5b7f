"""Hoskins et al. 2019: how far the streamed singular vectors of SBE converge within one batch.

The paper reports that within a batch of 1,024 the streamed estimate converges (its change per
sample falls below 10⁻³), while at batch 32 it does not, and training converges anyway
[V: papers.md §3.3]. Here: the paper's 784-100-10 ReLU network in floating point, seed 0, trained
by SGD at batch 100 until 90 % test accuracy (and again at 97 %), then frozen; for batch sizes
32, 128 and 1,024 the first layer's ``(x, δ)`` pairs (bias as an extra input column, as on an
array) of consecutive batches stream through the rank-1 SBE recursion of the update
(:func:`insitu.update.lowrank.sbe_trace`), each batch warm-started from the previous one's
estimate, as in training. Per batch (the 10 batches after 5 to warm up):

* ``change``: ``‖v̂_n − v̂_{n−1}‖`` of the unit input-side vector between the last two samples of the
  batch (sign-aligned; ``sqrt(2 (1 − |cos|))``), our reading of the paper's ε;
* ``misalignment``: ``1 - cos²(v_n, v₁)`` against the exact top right singular vector ``v₁`` of
  the batch gradient ``G = Σ δ xᵀ``.

    python docs/reproductions/hoskins_2019_convergence.py > docs/reproductions/data/hoskins-2019-sbe/convergence.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from insitu.data import load_dataset
from insitu.models import mlp
from insitu.update.lowrank import sbe_trace

ROOT = Path(__file__).resolve().parents[2]


def first_layer_pairs(model, x, y):
    """``(x with a ones column, δ of the first layer's pre-activations)`` per sample."""
    first = model[0]
    z = first(x)
    z.retain_grad()
    out = model[1:](z)
    torch.nn.functional.cross_entropy(out, y, reduction="sum").backward()
    return torch.cat([x, torch.ones(len(x), 1)], dim=1).double(), z.grad.double()


def cosine(a, b) -> float:
    return float((a @ b).abs() / (a.norm() * b.norm()))


def measure(model, data, batch: int, warmup: int, batches: int, offset: int) -> dict:
    x_est = d_est = None
    changes, misalignments = [], []
    for t in range(warmup + batches):
        lo = offset + t * batch
        x, d = first_layer_pairs(model, data.train_x[lo:lo + batch], data.train_y[lo:lo + batch])
        if x_est is None:
            x_est, d_est = x[0], d[0]
        xs, ds = sbe_trace(x, d, x_est, d_est)
        x_est, d_est = xs[-1], ds[-1]
        if t < warmup:
            continue
        _, _, vh = torch.linalg.svd(d.t() @ x, full_matrices=False)
        changes.append((2 * max(0.0, 1 - cosine(xs[-1], xs[-2]))) ** 0.5)
        misalignments.append(1 - cosine(xs[-1], vh[0]) ** 2)
    return {
        "batch": batch,
        "change_last_sample": {"median": statistics.median(changes), "max": max(changes)},
        "misalignment": {"median": statistics.median(misalignments), "max": max(misalignments)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "datasets"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--targets", default="0.90,0.97")
    parser.add_argument("--batch-sizes", default="32,128,1024")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("mnist", path=args.data_dir)
    data.train_x = data.train_x.reshape(len(data.train_x), -1)
    data.test_x = data.test_x.reshape(len(data.test_x), -1)
    torch.manual_seed(args.seed)
    model = mlp((784, 100, 10), "relu")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    order = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(args.seed))
    step, acc, out = 0, 0.0, []
    for target in sorted(float(t) for t in args.targets.split(",")):
        while acc < target:
            idx = order[(step * 100) % len(order):][:100]
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(data.train_x[idx]), data.train_y[idx]).backward()
            optimizer.step()
            step += 1
            if step % 20 == 0:
                with torch.no_grad():
                    acc = float((model(data.test_x).argmax(1) == data.test_y).float().mean())
        point = {"target": target, "steps": step, "test_accuracy": acc, "batches": []}
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            point["batches"].append(measure(model, data, batch, warmup=5, batches=10, offset=0))
            model.zero_grad()
        out.append(point)
    print(json.dumps({"network": "784-100-10 relu", "layer": "first (784+1 -> 100)", "seed": args.seed, "points": out}, indent=1))


if __name__ == "__main__":
    main()
