"""Speed of training an analog LSTM (preset ``gokmen-vlasov-2016``) against ``nn.LSTM``.

Prints one JSON object with, for every sequence length (``--lengths``, default 28 and 100) and
batch size (``--batches``, default 1 and 16), the CPU time of one training step (forward,
backward, optimizer step) of

* ``analog``: :class:`insitu.nn.AnalogLSTM` with the 2016 device and IO (one
  ``4H × (I + H)`` array, stochastic pulses, the ``sequential`` update mode of the preset, so
  ``T · B`` rank-1 pulse updates per step) trained by :class:`insitu.optim.AnalogSGD`;
* ``analog_summed``: the same with ``update.mode = "summed"`` (the ``T · B`` pairs' pulse
  coincidences counted and applied at once);
* ``torch``: ``nn.LSTM`` with ``torch.optim.SGD``;

and the ratios ``analog_over_torch``. Inputs are 28 features per step (a row of an MNIST image,
random values here: the timing does not depend on them), the hidden size ``--hidden`` (default
64), a digital linear read-out of the last step into 10 classes with cross-entropy (the same in
both, so the ratio is the LSTM's). One CPU thread; CPU time (``time.process_time``) by default.

Usage: ``python benchmarks/bench_lstm.py [--steps 20] [--hidden 64] [--lengths 28 100] [--batches 1 16]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import torch
from torch import nn

from insitu import AnalogSGD
from insitu.nn import AnalogLSTM
from insitu.presets import get_preset

FEATURES = 28
CLASSES = 10
CLOCKS = {"process": time.process_time, "wall": time.perf_counter}


def _time_training(lstm, head, optimizer, x, y, steps, warmup, clock):
    loss_fn = nn.CrossEntropyLoss()

    def step(i):
        xb, yb = x[i % len(x)], y[i % len(y)]
        optimizer.zero_grad()
        out, _ = lstm(xb)
        loss_fn(head(out[:, -1]), yb).backward()
        optimizer.step()

    for i in range(warmup):
        step(i)
    start = clock()
    for i in range(warmup, warmup + steps):
        step(i)
    return (clock() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per configuration")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    parser.add_argument("--hidden", type=int, default=64, help="hidden units H")
    parser.add_argument("--lengths", type=int, nargs="+", default=[28, 100], help="sequence lengths T")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16], help="batch sizes B")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="process", help="CPU time (default) or wall time")
    args = parser.parse_args()
    clock = CLOCKS[args.clock]
    torch.set_num_threads(args.threads)
    result = {
        "network": f"LSTM {FEATURES}-{args.hidden} + digital linear {args.hidden}-{CLASSES}",
        "preset": "gokmen-vlasov-2016",
        "steps": args.steps,
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "clock": args.clock,
        "ms_per_step": {},
    }
    preset = get_preset("gokmen-vlasov-2016")
    configs = {"analog": preset, "analog_summed": preset.replace(update=preset.update.replace(mode="summed"))}
    for length in args.lengths:
        for batch in args.batches:
            gen = torch.Generator().manual_seed(0)
            n = args.steps + args.warmup
            x = torch.rand(n, batch, length, FEATURES, generator=gen)
            y = torch.randint(0, CLASSES, (n, batch), generator=gen)
            row = {}
            for label, config in configs.items():
                torch.manual_seed(0)
                lstm = AnalogLSTM(FEATURES, args.hidden, batch_first=True, config=config, seed=0)
                head = nn.Linear(args.hidden, CLASSES)
                opt = AnalogSGD(list(lstm.parameters()) + list(head.parameters()), lr=0.01)
                row[label] = 1e3 * _time_training(lstm, head, opt, x, y, args.steps, args.warmup, clock)
            torch.manual_seed(0)
            lstm, head = nn.LSTM(FEATURES, args.hidden, batch_first=True), nn.Linear(args.hidden, CLASSES)
            opt = torch.optim.SGD(list(lstm.parameters()) + list(head.parameters()), lr=0.01)
            # The float step is short: time more of them for a stable number.
            row["torch"] = 1e3 * _time_training(lstm, head, opt, x, y, 4 * args.steps, args.warmup, clock)
            for label in configs:
                row[f"{label}_over_torch"] = row[label] / row["torch"]
            result["ms_per_step"][f"T{length}_B{batch}"] = row
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
