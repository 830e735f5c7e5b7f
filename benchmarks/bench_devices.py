"""Per-family speed of the registered pulsed device presets (issue 16); prints one JSON object.

For every pulsed device preset in the 2016 periphery (``*-2016-io``, ``gokmen-vlasov-2016``, the
two conductance-pair presets), the CPU time per training sample of the 784-256-128-10 sigmoid
network of Gokmen & Vlasov 2016 at batch 1 (lr 0.01, sequential stochastic update, MNIST), one
thread, relative to the plain PyTorch float step of the same network measured in the same run
(so a loaded machine shifts both). Each device runs on the compiled CPU engine when its model has
a compiled response (``"path": "compiled"``; the conductance pairs in the stateful kernel of
:mod:`insitu.update.kernels.compiled_pairs`), else on the torch path (``"torch"``).

Times are CPU time of this process (``time.process_time``) over ``--samples`` samples after
``--warmup`` untimed ones. Usage:
``python benchmarks/bench_devices.py [--samples 300] [--warmup 50] [--data-dir ../shared/datasets]``
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from insitu import AnalogSGD
from insitu.data import load_dataset
from insitu.models import mlp
from insitu.presets import get_preset, preset_names
from insitu.update.kernels import compiled_available, set_threads, use_backend

from bench_engine import _ms_per_step as step_ms  # the same timed step as the engine benchmark

SIZES = (784, 256, 128, 10)


def device_presets() -> list[str]:
    """The registered pulsed device presets of the 2016 periphery."""
    return ["gokmen-vlasov-2016"] + [name for name in preset_names() if name.endswith("-2016-io")]


def _ms_per_sample(model, optimizer, x, y, samples: int, warmup: int) -> float:
    return step_ms(model, optimizer, x, y, 1, samples, warmup)


def _path(config) -> str:
    model = config.device.model()
    if not compiled_available():
        return "torch"
    if getattr(model, "per_device_state", False):  # the conductance pairs: the stateful kernel
        hook = getattr(model, "compiled_state_response", None)
        return "compiled" if hook is not None and hook() is not None else "torch"
    return "compiled" if model.compiled_response() is not None else "torch"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    set_threads(1)
    data = load_dataset("mnist", path=args.data_dir)
    x, y = data.train_x, data.train_y

    def float_ms():
        torch.manual_seed(0)
        model = mlp(SIZES, "sigmoid", None)
        return _ms_per_sample(model, torch.optim.SGD(model.parameters(), lr=0.01), x, y, args.samples, args.warmup)

    first_float = float_ms()
    rows = {}
    for name in device_presets():
        config = get_preset(name)
        config = config.replace(update=config.update.replace(mode="sequential"))
        path = _path(config)
        with use_backend("compiled" if path == "compiled" else "torch"):
            torch.manual_seed(0)
            model = mlp(SIZES, "sigmoid", config)
            ms = _ms_per_sample(model, AnalogSGD(model.parameters(), lr=0.01), x, y, args.samples, args.warmup)
        rows[name] = {"device": type(config.device).__name__, "path": path, "ms_per_sample": ms}
    last_float = float_ms()  # again at the end: the load may change during the run
    reference = 0.5 * (first_float + last_float)
    for row in rows.values():
        row["over_float"] = row["ms_per_sample"] / reference
    result = {
        "benchmark": "ms per training sample, 2016 network, batch 1, per device preset",
        "threads": 1,
        "clock": "process CPU time",
        "samples": args.samples,
        "warmup": args.warmup,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "compiled_available": compiled_available(),
        "float_ms": {"first": first_float, "last": last_float, "mean": reference},
        "presets": rows,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
