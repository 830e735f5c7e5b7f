"""Why dw_min = 1e-4 (and BL = 1) train to chance in the 2016 sweeps (gokmen-vlasov-2016-sweeps.md).

With ``Cx = Cd = C = sqrt(lr / (BL dw_min))`` (Gokmen & Vlasov 2016, Eq. 3), both ``dw_min = 1e-4``
at BL = 10 and BL = 1 at ``dw_min = 1e-3`` give ``C = 3.16``: a line fires with probability
``min(1, C |v|)``, so every value above 0.32 is clipped. At the output layer the error of a sample
is ``softmax - onehot``: one large negative entry (the true class, about -0.9 early in training)
and nine small positive ones (about 0.1). Only the large one clips, so the true class's weight
increase is ~2.8x too small while the nine decreases are exact: every output weight drifts down
together, every logit reaches the output bound -12, the softmax is flat and the gradient
vanishes (test error 90.2 %, one class). The same dw_min with a train long enough to keep C at 1
(BL = 100) does not collapse, and neither does C = 3.16 without the output bound: the logits
still drift down together (to about -31 after 4,000 samples) but the softmax ignores a common
shift, and the loss keeps falling as the baseline's does; the bound turns the shift into
saturation.

Trains the 784-256-128-10 sigmoid network for 4,000 MNIST samples (batch 1, lr 0.01, seed 0) per
case and prints, as JSON, the training loss per 1,000 samples, the output layer's mean weight
change and the logits of two test images. One CPU thread; about a minute.

    python docs/reproductions/gokmen-vlasov-2016-clipping-collapse.py --data-dir ../shared/datasets
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from torch import nn

from insitu import AnalogSGD
from insitu.data import load_dataset
from insitu.models import mlp
from insitu.presets import get_preset
from insitu.update.kernels import set_backend

# The torch pulse-update backend (per-tile path): the committed numbers were made with it, and
# reruns equal them draw for draw (the compiled CPU backend agrees in distribution only).
set_backend("torch")

CASES = {
    "baseline (dw_min 1e-3, BL 10, C = 1)": {"dw_min": 1e-3, "bl": 10},
    "dw_min 1e-4, BL 10 (C = 3.16)": {"dw_min": 1e-4, "bl": 10},
    "dw_min 1e-3, BL 1 (C = 3.16)": {"dw_min": 1e-3, "bl": 1},
    "dw_min 1e-4, BL 100 (C = 1)": {"dw_min": 1e-4, "bl": 100},
    "dw_min 1e-4, BL 10 (C = 3.16), no output bound": {"dw_min": 1e-4, "bl": 10, "out_bound": None},
}


def run(case: dict, x, y, test_x, samples: int, lr: float) -> dict:
    config = get_preset("gokmen-vlasov-2016")
    config = config.replace(device=config.device.replace(dw_min=case["dw_min"]), update=config.update.replace(bl=case["bl"]))
    if "out_bound" in case:
        config = config.replace(
            forward=config.forward.replace(out_bound=case["out_bound"]),
            backward=config.backward.replace(out_bound=case["out_bound"]),
        )
    torch.manual_seed(0)
    model = mlp([784, 256, 128, 10], "sigmoid", config)
    optimizer = AnalogSGD(model.parameters(), lr=lr, fused=False)  # the per-tile path the committed numbers were made with
    output_tile = model[-1].tile
    start = output_tile.weight.detach().clone()
    losses, running = [], 0.0
    for i in range(samples):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        loss.backward()
        optimizer.step()
        running += loss.item()
        if (i + 1) % 1000 == 0:
            losses.append(round(running / 1000, 4))
            running = 0.0
    change = output_tile.weight.detach() - start
    with torch.no_grad():
        logits = model(test_x[:2])
    return {
        "C": round(math.sqrt(lr / (case["bl"] * case["dw_min"])), 3),
        "train_loss_per_1000_samples": losses,
        "output_layer_mean_weight_change": round(float(change.mean()), 4),
        "output_layer_mean_abs_weight_change": round(float(change.abs().mean()), 4),
        "logits_of_two_test_images": [[round(v, 2) for v in row] for row in logits.tolist()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[3] / "shared" / "datasets"))
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--lr", type=float, default=0.01)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("mnist", path=args.data_dir)
    x, y = data.train_x[: args.samples], data.train_y[: args.samples]
    results = {name: run(case, x, y, data.test_x, args.samples, args.lr) for name, case in CASES.items()}
    print(json.dumps({"samples": args.samples, "lr": args.lr, "ln(10)": round(math.log(10), 4), "cases": results}, indent=1))


if __name__ == "__main__":
    main()
