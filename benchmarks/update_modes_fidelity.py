"""How far the ``batched`` pulse update is from the ``sequential`` reference.

Two measurements, printed as one JSON object:

1. ``single_update``: one batch of B real (x, δ) pairs, taken from the first layer of the
   784-256-128-10 network while it trains on MNIST, is applied to the same tile state many
   times in each mode. Reported per mode: the relative error of the mean weight change against
   the ideal ``-lr Σ δ xᵀ`` and the mean per-device standard deviation of the change; and the
   ratio of the batched to the sequential spread.
2. ``training``: the full network trained on an MNIST subset in each mode, a few seeds; the
   test error after the given epochs.

Usage: ``python benchmarks/update_modes_fidelity.py [--batch 64] [--repeats 40] [--train-subset 10000]``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from insitu import AnalogSGD
from insitu.data import load_dataset
from insitu.models import mlp
from insitu.presets import get_preset
from insitu.training import TrainConfig, run_training


def _config(mode):
    config = get_preset("gokmen-vlasov-2016")
    return config.replace(update=config.update.replace(mode=mode))


def single_update(data, batch, repeats, lr):
    torch.manual_seed(0)
    model = mlp((784, 256, 128, 10), "sigmoid", _config("sequential"))
    opt = AnalogSGD(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    # Train briefly so that δ has the size it has during training, then capture one batch.
    for i in range(2000):
        opt.zero_grad()
        loss_fn(model(data.train_x[i : i + 1]), data.train_y[i : i + 1]).backward()
        opt.step()
    tile = model[0].tile
    xb, yb = data.train_x[5000 : 5000 + batch], data.train_y[5000 : 5000 + batch]
    opt.zero_grad()
    loss_fn(model(xb), yb).backward()
    x, d = tile._pending[0]
    tile.discard_pending()
    for t in (model[2].tile, model[4].tile):
        t.discard_pending()
    start = tile.get_weights()
    ideal = -lr * d.t() @ x
    out = {"batch": batch, "lr": lr, "repeats": repeats}
    changes = {}
    for mode in ("sequential", "batched"):
        tile.config = _config(mode)
        deltas = []
        started = time.perf_counter()
        for _ in range(repeats):
            tile.set_weights(start)
            tile.stash(x, d)
            tile.update(lr)
            deltas.append(tile.get_weights() - start)
        seconds = (time.perf_counter() - started) / repeats
        deltas = torch.stack(deltas)
        mean, var = deltas.mean(0), deltas.var(0)
        changes[mode] = (mean, var)
        out[mode] = {
            # 1.0 means the average change equals the ideal SGD change (device spreads make
            # single devices deviate, in both modes alike).
            "slope_of_mean_change_vs_ideal": float((mean * ideal).sum() / (ideal * ideal).sum()),
            "mean_device_std": float(var.sqrt().mean()),
            "seconds_per_update": seconds,
        }
    (m_s, v_s), (m_b, v_b) = changes["sequential"], changes["batched"]
    moved = (v_s + v_b) > 0
    # Per device, the squared difference of the two means in units of its standard error: about 1
    # when the two modes have the same mean change.
    z2 = (m_b - m_s)[moved].square() / ((v_s + v_b)[moved] / repeats)
    out["mean_difference_chi2_per_device"] = float(z2.mean())
    out["std_ratio_batched_over_sequential"] = out["batched"]["mean_device_std"] / out["sequential"]["mean_device_std"]
    return out


def training(data_dir, batch, lr, epochs, subset, seeds, out_dir):
    rows = {}
    for mode in ("sequential", "batched"):
        errors = []
        seconds = []
        for seed in seeds:
            config = TrainConfig(
                preset="gokmen-vlasov-2016", dataset="mnist", epochs=epochs, batch_size=batch, lr=lr,
                lr_milestones=(), seed=seed, subset=subset, update_mode=mode,
            )
            results = run_training(config, Path(out_dir) / f"{mode}-s{seed}", data_dir=data_dir, progress=False, log=lambda s: None)
            errors.append(results["epochs"][-1]["test_error"])
            seconds.append(sum(e["train_seconds"] for e in results["epochs"]))
        rows[mode] = {"test_errors": errors, "mean_test_error": sum(errors) / len(errors), "train_seconds": seconds}
    return {"batch": batch, "lr": lr, "epochs": epochs, "subset": subset, "seeds": list(seeds), **rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--train-lr", type=float, default=0.1)
    parser.add_argument("--train-subset", type=int, default=10000)
    parser.add_argument("--train-epochs", type=int, default=3)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default="runs/update-modes")
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("mnist", path=args.data_dir)
    result = {"single_update": single_update(data, args.batch, args.repeats, args.lr)}
    if not args.skip_training:
        seeds = [int(s) for s in args.seeds.split(",")]
        result["training"] = training(
            args.data_dir, args.train_batch, args.train_lr, args.train_epochs, args.train_subset, seeds, args.out
        )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
