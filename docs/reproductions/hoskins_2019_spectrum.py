"""Hoskins et al. 2019, Fig. 1: how much of a large batch's gradient lies in its first singular pairs.

The paper trains a 784-256-128-10 network (ReLU, and sigmoid) to 90 % test accuracy and looks at the
singular values of the batch gradient ``G = Σ_b δ_b x_bᵀ`` of a batch of 10,000: with ReLU up to 60 %
of ``Σσ²`` is in the first pair, with sigmoid the first 10 pairs hold up to 95 % [V: papers.md §3.3].

Here: the same network in floating point (plain ``torch.nn``; the spectrum is a property of the
gradient, not of a device), seed 0, SGD at batch 100 (lr 0.1 for ReLU, 0.5 for sigmoid); each time
the test accuracy (checked every 20 steps) first reaches a target (90 %, the paper's, and 97 %, later
in training), the gradient of each layer over the first 10,000 training images, with the bias as an
extra input column as on an array. Printed as JSON (energy share of the first pair and of the first
10 pairs, and the pairs that hold 95 %, per layer), also at initialisation.

    python docs/reproductions/hoskins_2019_spectrum.py > docs/reproductions/data/hoskins-2019-sbe/spectrum.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from insitu.data import load_dataset
from insitu.models import mlp

ROOT = Path(__file__).resolve().parents[2]


def layer_spectra(model, x, y) -> list[dict]:
    """Energy shares of the batch gradient's singular pairs, per linear layer."""
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y, reduction="sum").backward()
    out = []
    for layer in (m for m in model if isinstance(m, torch.nn.Linear)):
        g = torch.cat([layer.weight.grad, layer.bias.grad.unsqueeze(1)], dim=1).double()
        s2 = torch.linalg.svdvals(g) ** 2
        share = s2 / s2.sum()
        out.append({
            "shape": list(g.shape),
            "first_pair": float(share[0]),
            "first_10_pairs": float(share[:10].sum()),
            "pairs_for_95_percent": int((share.cumsum(0) < 0.95).sum()) + 1,
        })
    return out


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def run(activation: str, lr: float, data, seed: int, batch: int, targets, gradient_batch: int) -> dict:
    torch.manual_seed(seed)
    model = mlp((784, 256, 128, 10), activation)
    x_grad, y_grad = data.train_x[:gradient_batch], data.train_y[:gradient_batch]
    result = {"activation": activation, "lr": lr, "at_init": layer_spectra(model, x_grad, y_grad)}
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    order = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(seed))
    step, acc = 0, accuracy(model, data.test_x, data.test_y)
    result["at_targets"] = []
    for target in sorted(targets):
        while acc < target:
            idx = order[(step * batch) % len(order):][:batch]
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(data.train_x[idx]), data.train_y[idx]).backward()
            optimizer.step()
            step += 1
            if step % 20 == 0:
                acc = accuracy(model, data.test_x, data.test_y)
            if step > 100_000:
                raise RuntimeError(f"{activation}: test accuracy {acc:.3f} after {step} steps; raise the learning rate")
        result["at_targets"].append({"target": target, "steps": step, "test_accuracy": acc, "layers": layer_spectra(model, x_grad, y_grad)})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "datasets"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--targets", default="0.90,0.97", help="test accuracies at which the spectrum is taken")
    parser.add_argument("--gradient-batch", type=int, default=10_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("mnist", path=args.data_dir)
    data.train_x = data.train_x.reshape(len(data.train_x), -1)
    data.test_x = data.test_x.reshape(len(data.test_x), -1)
    targets = [float(t) for t in args.targets.split(",")]
    runs = [run(act, lr, data, args.seed, 100, targets, args.gradient_batch) for act, lr in (("relu", 0.1), ("sigmoid", 0.5))]
    print(json.dumps({"network": "784-256-128-10", "gradient_batch": args.gradient_batch, "target_test_accuracies": targets,
                      "seed": args.seed, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
