"""The pulse-update engine's targets (issue 15), both backends in one run, one CPU thread.

Prints one JSON object. Every ratio is analog time over the plain PyTorch float step of the same
network measured in the same run (so a loaded machine shifts both):

* ``mlp_batch1``: the 784-256-128-10 sigmoid network of Gokmen & Vlasov 2016 (preset
  ``gokmen-vlasov-2016``) at batch 1, sequential stochastic update, per sample (target 1.5x);
* ``mlp_batch64``: the same at batch 64 in ``sequential`` mode (64 exact rank-1 pulse updates per
  step; target 4x);
* ``cnn_batch1``: the CNN of Gokmen, Onen & Haensch 2017 (preset ``gokmen-2017-cnn-nm-bm-um``) at
  batch 1 in ``sequential`` mode (one rank-1 pulse update per image patch, in order; target 2.5x);
* ``replicas``: R = 1, 8, 32 replicas of the 2016 network in lockstep against one network
  (target: R = 32 at most 8x);
* ``device_protocol``: a 100x100 tile at full coincidence, 200 down then 200 up pulses; mean and
  spread of the weights at the turning point and at the end, per backend (must agree within 1 %);
* ``families_batch1``: per-sample cost of the 2016 network with each pulsed device family.

Times are CPU time of this process (``time.process_time``). Usage:
``python benchmarks/bench_engine.py [--samples 2000] [--steps64 20] [--images 40] [--rounds 1]
[--replica-rounds 1] [--data-dir ../shared/datasets]`` (``--quick`` for a smoke run). With
``--rounds N`` / ``--replica-rounds N`` each target row is measured N times, its float (or one
network's) and compiled steps alternated, and the medians are reported with the rounds.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from insitu import AnalogSGD
from insitu.data import load_dataset
from insitu.devices import LinearStepDevice, PowStepDevice, SoftBoundsDevice
from insitu.models import cnn_2017, mlp
from insitu.presets import get_preset
from insitu.tile import AnalogTile
from insitu.update.kernels import compiled_available, set_threads, use_backend

SIZES = (784, 256, 128, 10)


def _ms_per_step(model, optimizer, x, y, batch, steps, warmup, replicas=None):
    loss_fn = nn.CrossEntropyLoss(reduction="sum" if replicas else "mean")
    generator = torch.Generator().manual_seed(0)

    def step(i):
        if replicas:
            index = torch.randint(x.shape[0], (replicas, 1), generator=generator)
            logits, target = model(x[index]).flatten(0, 1), y[index].flatten()
        else:
            logits, target = model(x[i * batch : (i + 1) * batch]), y[i * batch : (i + 1) * batch]
        optimizer.zero_grad()
        loss_fn(logits, target).backward()
        optimizer.step()

    for i in range(warmup):
        step(i)
    start = time.process_time()
    for i in range(warmup, warmup + steps):
        step(i)
    return 1e3 * (time.process_time() - start) / steps


def _analog(build, x, y, batch, steps, warmup, backend, replicas=None):
    with use_backend(backend):
        torch.manual_seed(0)
        model = build()
        return _ms_per_step(model, AnalogSGD(model.parameters(), lr=0.01), x, y, batch, steps, warmup, replicas)


def _float(build, x, y, batch, steps, warmup):
    torch.manual_seed(0)
    model = build()
    return _ms_per_step(model, torch.optim.SGD(model.parameters(), lr=0.01), x, y, batch, steps, warmup)


def _sequential(preset: str):
    config = get_preset(preset)
    return config.replace(update=config.update.replace(mode="sequential"))


def _compare(name, analog: dict, float_ms: float, target: float) -> dict:
    out = {"float_ms": float_ms, "target_ratio": target}
    for backend, ms in analog.items():
        out[f"{backend}_ms"] = ms
        out[f"{backend}_over_float"] = ms / float_ms
    return out


def _rounds(measure_float, measure_analog: dict, target: float, rounds: int) -> dict:
    """A target row measured ``rounds`` times, the float step and each backend's analog step
    alternated within a round (a load that drifts during the run then moves both); one round:
    its numbers; several: the median of every number over the rounds (each ratio the median of
    the rounds' ratios) and the rounds. Backends in ``measure_analog`` whose value is a number
    (measured once, e.g. the slow torch path) keep it in every round."""
    table = []
    for _ in range(max(1, rounds)):
        analog = {b: (m if isinstance(m, float) else m()) for b, m in measure_analog.items()}
        table.append(_compare("", analog, measure_float(), target))
    if len(table) == 1:
        return table[0]
    row = {key: statistics.median(r[key] for r in table) for key in table[0]}
    row["rounds"] = table
    return row


def _device_protocol(backend: str) -> dict:
    config = get_preset("gokmen-vlasov-2016")
    config = config.replace(update=config.update.replace(bl=1))
    ones = torch.ones(1, 100)
    with use_backend(backend):
        tile = AnalogTile(100, 100, config, seed=21)
        tile.set_weights(torch.zeros(100, 100))
        start = time.process_time()
        for k, sign in enumerate([1.0] * 200 + [-1.0] * 200):
            tile.stash(ones, sign * ones)  # δ = x: the weight moves down first
            tile.update(config.device.dw_min)  # Cx = Cd = 1: one coincidence per device
            if k == 199:
                turning = tile.weight.detach().clone()
        elapsed = time.process_time() - start
    end = tile.weight.detach()
    return {
        "after_200_down": {"mean": float(turning.mean()), "std": float(turning.std())},
        "after_200_up": {"mean": float(end.mean()), "std": float(end.std())},
        "ms_per_update": 1e3 * elapsed / 400,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000, help="timed samples at batch 1")
    parser.add_argument("--steps64", type=int, default=20, help="timed steps at batch 64")
    parser.add_argument("--images", type=int, default=40, help="timed CNN images (compiled; the torch path gets a quarter)")
    parser.add_argument("--replica-steps", type=int, default=300)
    parser.add_argument(
        "--replica-rounds", type=int, default=1,
        help="alternate the one-network and lockstep measurements this many times and report medians "
        "(the lockstep step is memory-bound, so its ratio varies more than the others)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="measure the batch-1, batch-64 and CNN rows this many times, the float and compiled steps "
        "alternated, and report medians (ratios on a loaded machine drift with the load)",
    )
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    parser.add_argument("--quick", action="store_true", help="a few steps of everything (smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.samples, args.steps64, args.images, args.replica_steps = 50, 2, 4, 10
    torch.set_num_threads(1)
    set_threads(1)  # the targets are per thread (replicas may run in parallel threads otherwise)
    backends = ["compiled", "torch"] if compiled_available() else ["torch"]
    data = load_dataset("mnist", path=args.data_dir)
    x, y = data.train_x, data.train_y
    result = {
        "threads": 1,
        "clock": "process CPU time",
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "backends": backends,
    }
    warm = min(300, args.samples)

    def rpu_mlp():
        return mlp(SIZES, "sigmoid", get_preset("gokmen-vlasov-2016"))

    def float_mlp():
        return mlp(SIZES, "sigmoid", None)

    def once_or_rounds(backend, measure):
        # the compiled backend (the targets' subject) in every round, the slow torch path once
        return measure if backend == "compiled" else measure()

    result["mlp_batch1"] = _rounds(
        lambda: _float(float_mlp, x, y, 1, args.samples, warm),
        {b: once_or_rounds(b, lambda b=b: _analog(rpu_mlp, x, y, 1, args.samples, warm, b)) for b in backends},
        1.5, args.rounds,
    )

    def rpu_mlp_sequential():
        return mlp(SIZES, "sigmoid", _sequential("gokmen-vlasov-2016"))

    result["mlp_batch64"] = _rounds(
        lambda: _float(float_mlp, x, y, 64, 10 * args.steps64, 10),
        {b: once_or_rounds(b, lambda b=b: _analog(rpu_mlp_sequential, x, y, 64, args.steps64, 2, b)) for b in backends},
        4.0, args.rounds,
    )

    def rpu_cnn():
        return cnn_2017(config=_sequential("gokmen-2017-cnn-nm-bm-um"))

    def cnn_analog(b):
        images = args.images if b == "compiled" else max(2, args.images // 4)
        return _analog(rpu_cnn, x, y, 1, images, 2, b)

    result["cnn_batch1"] = _rounds(
        lambda: _float(lambda: cnn_2017(config=None), x, y, 1, 10 * args.images, 10),
        {b: once_or_rounds(b, lambda b=b: cnn_analog(b)) for b in backends},
        2.5, args.rounds,
    )

    config = get_preset("gokmen-vlasov-2016")
    replicas = {"target_R32_over_single": 8.0}
    for b in backends:
        rounds = []
        for _ in range(max(1, args.replica_rounds)):
            single = _analog(rpu_mlp, x, y, 1, args.replica_steps, 20, b)
            row = {"single_ms": single}
            for n in (1, 8, 32):
                seeds = [[1000 * layer + r for r in range(n)] for layer in range(len(SIZES) - 1)]
                ms = _analog(lambda: mlp(SIZES, "sigmoid", [config] * n, seeds=seeds), x, y, 1, args.replica_steps, 20, b, replicas=n)
                row[f"R{n}_ms"] = ms
                row[f"R{n}_over_single"] = ms / single
            rounds.append(row)
        # One round: its numbers; several: the median of each number over the rounds, and the rounds.
        replicas[b] = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        if len(rounds) > 1:
            replicas[b]["rounds"] = rounds
    result["replicas"] = replicas

    result["device_protocol"] = {b: _device_protocol(b) for b in backends}

    families = {
        "constant step (2016)": None,
        "linear step": LinearStepDevice(),
        "soft bounds": SoftBoundsDevice(),
        "power step": PowStepDevice(),
    }
    per_family = {}
    for name, device in families.items():
        def build(device=device):
            config = get_preset("gokmen-vlasov-2016")
            return mlp(SIZES, "sigmoid", config if device is None else config.replace(device=device))

        per_family[name] = {b: _analog(build, x, y, 1, max(50, args.samples // 4), 50, b) for b in backends}
    result["families_batch1_ms"] = per_family
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
