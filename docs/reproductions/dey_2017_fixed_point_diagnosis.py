"""Why fixed-point training of the sparse 800-100-10 network fails at 8-12 bits (Dey et al. 2017).

Trains one epoch (``--epochs``: more) at batch 1 (η = 2^-6) on a random MNIST training subset (``--subset 0``:
all 60,000 images) and records, for every
parameter tensor, the fraction of its entries whose rounded update ``q(η·δ·a)`` is non-zero
(``nonzero_update``) among those whose exact update is non-zero, and the fraction of output
logits and hidden pre-activations that sit at the saturation bounds of the activation format.
One JSON line per condition goes to stdout and all of them to ``--out``.

Run from the repository root, e.g.::

    python docs/reproductions/dey_2017_fixed_point_diagnosis.py --subset 5000 \
        --out docs/reproductions/data/dey-2017-sparse/fixed_point_diagnosis.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from insitu.data import load_dataset
from insitu.sparse.fixed_point import FixedPointSGD, quantize
from insitu.sparse.training import (
    SparseTrainConfig,
    _loss,
    build_sparse_mlp,
    pad_inputs,
)

DATA = Path(__file__).resolve().parents[3] / "shared" / "datasets"
COMMON = dict(sizes=(800, 100, 10), out_degrees=(50, 10), pattern="clash-free", z=(200, 5), batch_size=1,
              activation="relu", epochs=1, weight_decay=0.0, learning_rate_exponent=6)

# name -> overrides of COMMON
CONDITIONS = {
    "16:5 nearest": dict(fixed_point="16:5"),
    "12:4 nearest": dict(fixed_point="12:4"),
    "12:4 stochastic": dict(fixed_point="12:4", update_rounding="stochastic"),
    "10:3 nearest": dict(fixed_point="10:3"),
    "10:3 stochastic": dict(fixed_point="10:3", update_rounding="stochastic"),
    "8:1 nearest": dict(fixed_point="8:1"),
    "8:1 stochastic": dict(fixed_point="8:1", update_rounding="stochastic"),
    # Same word width, integer/fraction split per quantity: weights and errors (|w|, |δ| < 1
    # mostly) give their integer bits to the fraction; activations keep the range.
    "12 split nearest": dict(fixed_point="12:4", weight_format="12:1", error_format="12:0", update_format="12:1"),
    "12 split stochastic": dict(fixed_point="12:4", weight_format="12:1", error_format="12:0", update_format="12:1", update_rounding="stochastic"),
    "10 split nearest": dict(fixed_point="10:3", weight_format="10:1", error_format="10:0", update_format="10:1"),
    "10 split stochastic": dict(fixed_point="10:3", weight_format="10:1", error_format="10:0", update_format="10:1", update_rounding="stochastic"),
    "8 split nearest": dict(fixed_point="8:2", weight_format="8:0", error_format="8:0", update_format="8:0"),
    "8 split stochastic": dict(fixed_point="8:2", weight_format="8:0", error_format="8:0", update_format="8:0", update_rounding="stochastic"),
    # As above, with one more integer bit for activations (logit range ±16 at 10 bits, ±8 at 8).
    "10 split, activations 10:4, stochastic": dict(fixed_point="10:4", weight_format="10:1", error_format="10:0", update_format="10:1", update_rounding="stochastic"),
    "8 split, activations 8:3, stochastic": dict(fixed_point="8:3", weight_format="8:0", error_format="8:0", update_format="8:0", update_rounding="stochastic"),
    # At 8 bits: half the learning rate (2^-7, one weight step).
    "8 split stochastic, η=2^-7": dict(fixed_point="8:2", weight_format="8:0", error_format="8:0", update_format="8:0", update_rounding="stochastic", learning_rate_exponent=7),
    "8 split, activations 8:3, stochastic, η=2^-7": dict(fixed_point="8:3", weight_format="8:0", error_format="8:0", update_format="8:0", update_rounding="stochastic", learning_rate_exponent=7),
}


@torch.no_grad()
def _accuracy(model, x: torch.Tensor, y: torch.Tensor, batch: int = 2000) -> float:
    correct = 0
    for start in range(0, x.shape[0], batch):
        correct += int((model(x[start : start + batch]).argmax(1) == y[start : start + batch]).sum())
    return correct / x.shape[0]


def _at_bound(p: torch.Tensor, fmt) -> float:
    """Fraction of the entries of ``p`` at the largest magnitude its format holds."""
    return float(((p >= fmt.max_value) | (p <= fmt.min_value)).float().mean())


def diagnose(config: SparseTrainConfig, data) -> dict:
    """Train ``config`` for its epochs, counting surviving updates and saturated activations;
    after each epoch the test accuracy, the saturation so far, the largest weight of each
    tensor and the fraction of its weights at the weight format's bound."""
    fixed = config.fixed_point_config()
    model, _ = build_sparse_mlp(config)
    optimizer = FixedPointSGD(model.parameters(), fixed, seed=10_000 + config.seed)
    names = [name for name, _ in model.named_parameters()]
    params = list(model.parameters())
    exact_nonzero = [0] * len(params)
    kept_nonzero = [0] * len(params)
    # Model layout: [q, layer1, q, relu, q, layer2, q]; outputs of index 2 (pre-act) and 6 (logits).
    saturated = {"hidden_preactivation": [0, 0], "logits": [0, 0]}
    act = fixed.activations

    def count(key):
        def hook(_module, _inputs, out):
            hits = (out >= act.max_value) | (out <= act.min_value)
            saturated[key][0] += int(hits.sum())
            saturated[key][1] += out.numel()
        return hook

    model[2].register_forward_hook(count("hidden_preactivation"))
    model[6].register_forward_hook(count("logits"))
    x = pad_inputs(data.train_x, config.sizes[0])
    test_x = pad_inputs(data.test_x, config.sizes[0])
    start = time.perf_counter()
    per_epoch = []
    for epoch in range(config.epochs):
        # Epoch 0's order is the one of the 1-epoch diagnosis (seeded by the seed alone).
        order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(config.seed + 7919 * epoch))
        for i in order.tolist():
            optimizer.zero_grad(set_to_none=True)
            _loss(model(x[i : i + 1]), data.train_y[i : i + 1], config.output, "sum").backward()
            with torch.no_grad():
                for j, p in enumerate(params):
                    exact = p.grad * optimizer.config.lr
                    exact_nonzero[j] += int((exact != 0).sum())
                    # What rounding to nearest keeps, whatever rounding the run itself uses.
                    kept_nonzero[j] += int((quantize(exact, fixed.updates) != 0).sum())
            optimizer.step()
        before = {k: list(v) for k, v in saturated.items()}
        accuracy = _accuracy(model, test_x, data.test_y)
        for k, v in before.items():  # the test pass does not count as saturation of training
            saturated[k][:] = v
        per_epoch.append({
            "epoch": epoch + 1,
            "test_accuracy": accuracy,
            "saturated_fraction_so_far": {k: h / max(t, 1) for k, (h, t) in saturated.items()},
            "max_abs_weight": {n: float(p.detach().abs().max()) for n, p in zip(names, params)},
            "weights_at_bound": {n: _at_bound(p.detach(), fixed.weights) for n, p in zip(names, params)},
        })
        print(json.dumps({"epoch": epoch + 1, "test_accuracy": accuracy, "weights_at_bound": per_epoch[-1]["weights_at_bound"]}), flush=True)
    model.eval()
    return {
        "test_accuracy": per_epoch[-1]["test_accuracy"],
        "per_epoch": per_epoch,
        "nearest_keeps_fraction_of_updates": {n: k / max(e, 1) for n, k, e in zip(names, kept_nonzero, exact_nonzero)},
        "saturated_fraction": {k: h / max(t, 1) for k, (h, t) in saturated.items()},
        "final_max_abs_weight": {n: float(p.detach().abs().max()) for n, p in zip(names, params)},
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subset", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=str(DATA))
    parser.add_argument("--only", nargs="*", default=None, help="condition names to run (default all)")
    parser.add_argument("--output", default="softmax", choices=["softmax", "sigmoid"])
    parser.add_argument("--out", default=None)
    parser.add_argument("--epochs", type=int, default=1, help="epochs per condition (1: the committed diagnosis)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("mnist", path=args.data_dir, subset=args.subset or None, seed=args.seed)
    common = {**COMMON, "epochs": args.epochs}
    results = {"subset": args.subset, "seed": args.seed, "output": args.output, "common": common, "conditions": {}}
    for name, kw in CONDITIONS.items():
        if args.only and name not in args.only:
            continue
        config = SparseTrainConfig(**{**common, **kw}, seed=args.seed, output=args.output)
        results["conditions"][name] = {"overrides": kw, **diagnose(config, data)}
        print(json.dumps({"condition": name, **results["conditions"][name]}), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
