"""Training speed of the CNN of Gokmen, Onen & Haensch 2017 on MNIST, analog and plain PyTorch.

Prints one JSON object with training images per second at batch 1 and batch 8 (one CPU thread)
for: the analog network with preset ``gokmen-2017-cnn-nm-bm-um`` in the ``sequential`` update
mode (one rank-1 pulse update per image patch: 576 for the first convolution), the ``summed``
and the ``batched`` modes, and the same network in plain PyTorch.

Usage: ``python benchmarks/bench_cnn.py [--images 40] [--data-dir ../shared/datasets]``
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch
from torch import nn

from insitu import AnalogSGD
from insitu.data import load_dataset
from insitu.models import cnn_2017
from insitu.presets import get_preset


def images_per_second(model, optimizer, x, y, batch, images):
    loss_fn = nn.CrossEntropyLoss()
    steps = max(1, images // batch)

    def step(i):
        xb, yb = x[i * batch : (i + 1) * batch], y[i * batch : (i + 1) * batch]
        optimizer.zero_grad()
        loss_fn(model(xb), yb).backward()
        optimizer.step()

    step(0)  # warm-up
    start = time.perf_counter()
    for i in range(1, steps + 1):
        step(i)
    return steps * batch / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40, help="timed images per measurement")
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    parser.add_argument("--preset", default="gokmen-2017-cnn-nm-bm-um")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("mnist", path=args.data_dir)
    x, y = data.train_x, data.train_y
    result = {"network": "cnn-2017 (conv5x5x16, pool2, conv5x5x32, pool2, 512-128-10, tanh)", "preset": args.preset, "threads": 1}
    for batch in (1, 8):
        for mode in ("sequential", "summed", "batched"):
            config = get_preset(args.preset)
            config = config.replace(update=config.update.replace(mode=mode))
            torch.manual_seed(0)
            model = cnn_2017(config=config)
            result[f"analog_{mode}_batch{batch}_images_per_s"] = images_per_second(
                model, AnalogSGD(model.parameters(), lr=0.01), x, y, batch, args.images
            )
        torch.manual_seed(0)
        model = cnn_2017(config=None)
        result[f"torch_batch{batch}_images_per_s"] = images_per_second(
            model, torch.optim.SGD(model.parameters(), lr=0.01), x, y, batch, args.images * 10
        )
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
